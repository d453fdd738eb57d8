"""The lineage tree (a forest: one tree per root), pruned to the branches that matter, and as text."""

from __future__ import annotations

from collections import Counter

from archive_db import ArchiveDB
from openended.inspection.access import InspectionError, ids_json, snapshot

__all__ = ["tree", "format_tree"]


def tree(db: ArchiveDB, *, max_nodes: int = 200, show_all: bool = False) -> dict:
    """The lineage tree (forest: one tree per root), pruned for big runs.

    Without ``show_all``, when the campaign holds more than ``max_nodes`` agents the tree keeps
    the branches that matter: the best agent's lineage first (whole, even where it is longer than
    ``max_nodes``), then the paths from a root to the
    current elites (fittest first), then to other archived agents, while they fit in ``max_nodes``.
    Each node says how many of its children were left out (``hidden_children``).
    """
    if isinstance(max_nodes, bool) or not isinstance(max_nodes, int) or max_nodes < 1:
        raise InspectionError(f"--max-nodes must be an integer >= 1, not {max_nodes!r}")
    conn = db.conn
    with snapshot(db):
        parent = dict(conn.execute("SELECT id, parent_id FROM agents").fetchall())
        total = len(parent)
        best = db.best_agent()
        best_path: list[int] = []
        node = None if best is None else best["id"]
        while node is not None:
            best_path.append(node)
            node = parent[node]
        elites = {r[0] for r in conn.execute("SELECT agent_id FROM elites")}
        pruned = not show_all and total > max_nodes
        if not pruned:
            keep = set(parent)
        else:
            keep = set(best_path)

            def add_paths(sql: str) -> bool:
                """Add root-to-agent paths in the query's order; False once one does not fit."""
                for (aid,) in conn.execute(sql):
                    fragment, n = [], aid
                    while n is not None and n not in keep:
                        fragment.append(n)
                        n = parent[n]
                    if len(keep) + len(fragment) > max_nodes:
                        return False
                    keep.update(fragment)
                return True

            if add_paths("SELECT e.agent_id FROM elites e JOIN agents a ON a.id = e.agent_id "
                         "ORDER BY a.fitness DESC, e.agent_id"):
                # +status: walk the fitness index and stop early, instead of sorting every archived agent
                add_paths("SELECT id FROM agents WHERE +status = 'archived' ORDER BY fitness DESC, id")
        rows = conn.execute(
            "SELECT id, parent_id, depth, status, operator, model, fitness, cell, archive_event FROM agents "
            + ("" if not pruned else "WHERE id IN (SELECT value FROM json_each(?)) ") + "ORDER BY id",
            (ids_json(keep),) if pruned else (),
        ).fetchall()
    children = Counter(p for p in parent.values() if p is not None)
    shown_children = Counter(r[1] for r in rows if r[1] is not None)
    on_best = set(best_path)
    nodes = [
        {"id": r[0], "parent_id": r[1], "depth": r[2], "status": r[3], "operator": r[4], "model": r[5],
         "fitness": r[6], "cell": r[7], "archive_event": r[8], "elite": r[0] in elites,
         "best_lineage": r[0] in on_best, "hidden_children": children[r[0]] - shown_children[r[0]]}
        for r in rows
    ]
    return {"total": total, "shown": len(nodes), "pruned": pruned, "best_agent": None if best is None else best["id"],
            "roots": [n["id"] for n in nodes if n["parent_id"] is None], "nodes": nodes}


def _label(n: dict, best_agent: int | None) -> str:
    fit = "-" if n["fitness"] is None else f"{n['fitness']:.4g}"
    op = n["operator"] if not n["model"] else f"{n['operator']}/{n['model']}"
    parts = [f"#{n['id']}", op, f"fitness {fit}", n["status"]]
    if n["elite"]:
        parts.append(f"elite cell {n['cell']}")
    if n["id"] == best_agent:
        parts.append("<- best")
    elif n["best_lineage"]:
        parts.append("*")
    if n["hidden_children"]:
        parts.append(f"(+{n['hidden_children']} hidden)")
    return " ".join(parts)


#: Characters of tree drawing after which a deeper branch starts again near the left margin, its lines
#: marked ``…`` (a 10,000-step lineage would otherwise print lines 30,000 characters wide).
MAX_INDENT = 60
_FOLD = "… "


def format_tree(t: dict) -> str:
    """The tree from :func:`tree` as text: each root at the left, each child one step (3 characters)
    right of its parent, below it, joined by ``├─``/``└─`` (an only child too: it is a child, not a
    sibling). A branch deeper than :data:`MAX_INDENT` characters goes on from the left margin, its lines
    starting with ``…``. ``*`` marks the best agent's lineage."""
    kids: dict[int | None, list[int]] = {}
    by_id = {n["id"]: n for n in t["nodes"]}
    for n in t["nodes"]:
        kids.setdefault(n["parent_id"], []).append(n["id"])
    if not t["nodes"]:
        return "(no agents yet)"
    lines: list[str] = []
    if t["pruned"]:
        lines.append(f"(showing {t['shown']} of {t['total']} agents: the best lineage and branches to archived "
                     "agents; --all shows every agent)")
    # (node, prefix of its own line, prefix of its descendants' lines)
    stack: list[tuple[int, str, str]] = [(r, "", "") for r in reversed(kids.get(None, []))]
    while stack:  # iterative: lineages can be 10,000 deep
        nid, line_prefix, desc_prefix = stack.pop()
        lines.append(line_prefix + _label(by_id[nid], t["best_agent"]))
        below = kids.get(nid, [])
        if len(desc_prefix) >= MAX_INDENT:
            desc_prefix = _FOLD
        for i in range(len(below) - 1, -1, -1):
            last = i == len(below) - 1
            stack.append((below[i], desc_prefix + ("└─ " if last else "├─ "), desc_prefix + ("   " if last else "│  ")))
    return "\n".join(lines)
