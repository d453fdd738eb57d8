"""The state of a campaign read from its database (safe while the campaign is writing)."""

from __future__ import annotations

import fcntl
from pathlib import Path

from archive_db import ArchiveDB


def campaign_status(db_path: str | Path) -> dict:
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
            duplicates = db.conn.execute("SELECT COUNT(*) FROM agents WHERE duplicate_of IS NOT NULL").fetchone()[0]
        finally:
            db.conn.execute("COMMIT")
        config = run["config"]
        progress = db.progress_counts(counts)
        return {
            "db": str(db_path),
            "task": run["task"],
            "seed": run["seed"],
            "status": _live_status(db_path, run["status"]),
            "children_proposed": sum(counts.values()),
            "children_done": progress["done"],
            "children_failed": progress["failed"],
            "children_pending": progress["pending"],
            "by_status": counts,
            "archive": config["archive"]["kind"],
            "selection": config["selection"]["strategy"],
            "archive_size": elites,
            "qd_score": last.get("qd_score", 0.0),
            "coverage": last.get("coverage", 0.0),
            "best_fitness": None if best is None else best["fitness"],
            "best_agent": None if best is None else best["id"],
            "max_children": config["budget"]["max_children"],
            "elapsed_seconds": run["state"].get("elapsed_seconds", 0.0),
            "duplicates": duplicates,
            "tokens": usage["tokens"],
            "cost": usage["cost"],
            "operators": _success_rates(operators, "operator"),
            "models": _success_rates(operators, "model"),
            "updated_at": run["updated_at"],
        }


def _success_rates(rows: list[dict], key: str) -> dict[str, dict]:
    """Children, archived, failed and success rate (archived / finished) per operator or per model."""
    out: dict[str, dict] = {}
    for row in rows:
        agg = out.setdefault(row[key], {"children": 0, "finished": 0, "archived": 0, "failed": 0})
        for field in agg:
            agg[field] += row[field] or 0
    for agg in out.values():
        agg["success_rate"] = agg["archived"] / agg["finished"] if agg["finished"] else None
    return out


def _live_status(db_path, recorded: str) -> str:
    """'running' only while a driver holds the campaign's lock; a driver that died says 'interrupted'."""
    if recorded != "running":
        return recorded
    try:
        with open(f"{db_path}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return "running"
    return "interrupted"
