"""The state of a campaign read from its database (safe while the campaign is writing)."""

from __future__ import annotations

import fcntl
from dataclasses import asdict, dataclass, field
from pathlib import Path

from archive_db import ArchiveDB
from openended.standing import Standing


@dataclass(frozen=True)
class CampaignStatus:
    """A stored campaign's standing plus what only the store knows: its status, counts by status, usage."""

    standing: Standing
    db: str
    task: str
    seed: int
    status: str
    children_pending: int
    by_status: dict[str, int]
    archive: str
    selection: str
    best_agent: int | None
    duplicates: int
    tokens: int
    cost: float
    operators: dict[str, dict]
    models: dict[str, dict]
    updated_at: str
    sandbox: str  # the sandbox of the latest session ("" for a campaign run before it was recorded)
    nodes_lost: int = 0  # tasks whose Ray node died under them (their children went out again)
    # children evaluated per Ray node (openended.engine.nodes), most first; empty for a campaign run before it
    children_per_node: dict[str, int] = field(default_factory=dict)
    # the children finished when coverage, QD score and mean fitness were last measured (the latest stats row;
    # a campaign killed with kill -9 may have finished more since): None before the first
    stats_at_children: int | None = None
    # why the latest session ended, e.g. "children budget" or a crashed model's signal and log ("" while one runs,
    # or for a campaign that ended before this was recorded)
    stop_reason: str = ""

    def as_dict(self) -> dict:
        """One flat mapping (what ``openended status --json`` prints)."""
        out = {k: v for k, v in asdict(self).items() if k != "standing"}
        return {**self.standing.as_dict(), **out}


def campaign_status(db_path: str | Path) -> CampaignStatus:
    """Counts, archive statistics and run status of the campaign in ``db_path``, read-only."""
    with ArchiveDB(db_path, readonly=True) as db:
        db.conn.execute("BEGIN")  # one read snapshot: every number from the same moment
        try:
            run = db.get_run()
            if run is None:
                raise ValueError(f"{db_path}: no campaign in this database")
            counts = db.counts()
            last = db.latest_stats() or {}
            best = db.best_agent()
            elites = db.elite_count()
            operators = db.named_query("operator_success")
            usage = db.usage_totals()
            duplicates = db.duplicate_count()
        finally:
            db.conn.execute("COMMIT")
        config = run["config"]
        progress = db.progress_counts(counts)
        status = _live_status(db_path, run["status"])
        measured_at = int(last.get("children_done") or 0) + int(last.get("children_failed") or 0) if last else None
        standing = Standing(
            children_done=progress["done"], children_failed=progress["failed"],
            children_in_flight=0 if status != "running" else int(last.get("children_in_flight") or 0),
            children_proposed=sum(counts.values()), max_children=config["budget"]["max_children"],
            archive_size=elites, coverage=last.get("coverage", 0.0), qd_score=last.get("qd_score", 0.0),
            best_fitness=None if best is None else best["fitness"], mean_fitness=last.get("mean_fitness"),
            elapsed_seconds=run["state"].get("elapsed_seconds", 0.0))
        return CampaignStatus(
            standing=standing, db=str(db_path), task=run["task"], seed=run["seed"],
            status=status, children_pending=progress["pending"], by_status=counts,
            archive=config["archive"]["kind"], selection=config["selection"]["strategy"],
            best_agent=None if best is None else best["id"], duplicates=duplicates, tokens=int(usage["tokens"]),
            cost=usage["cost"], operators=_success_rates(operators, "operator"),
            models=_success_rates(operators, "model"), updated_at=run["updated_at"],
            sandbox=str(run["state"].get("sandbox", "")), nodes_lost=int(run["state"].get("nodes_lost", 0)),
            children_per_node=_per_node(run["state"].get("children_per_node")),
            stats_at_children=measured_at,
            stop_reason="" if status == "running" else str(run["state"].get("stop_reason", "")))


def _per_node(stored: object) -> dict[str, int]:
    """The driver state's children per node, most first (nothing when it is missing or not a mapping)."""
    if not isinstance(stored, dict):
        return {}
    counts = {str(node): int(n) for node, n in stored.items() if isinstance(n, int)}
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _success_rates(rows: list[dict], key: str) -> dict[str, dict]:
    """Children, archived, failed and success rate (archived / finished) per operator or per model."""
    out: dict[str, dict] = {}
    for row in rows:
        agg = out.setdefault(row[key], {"children": 0, "finished": 0, "archived": 0, "failed": 0})
        for name in agg:
            agg[name] += row[name] or 0
    for agg in out.values():
        agg["success_rate"] = agg["archived"] / agg["finished"] if agg["finished"] else None
    return out


def _live_status(db_path, recorded: str) -> str:
    """'running' only while a driver holds the campaign's lock; a driver that died says 'interrupted'."""
    from openended.engine.runtime import lock_path

    if recorded != "running":
        return recorded
    try:
        with open(lock_path(db_path)) as lock:  # a reader makes no lock file: none means no driver
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except FileNotFoundError:
        return "interrupted"
    except BlockingIOError:
        return "running"
    return "interrupted"
