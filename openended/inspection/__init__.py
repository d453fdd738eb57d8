"""Read-only views of a campaign database: what the inspection commands, plots and benchmarks show.

Every view takes an open read-only :class:`~archive_db.ArchiveDB` (see :func:`open_db`) or a path,
and never writes; each reads one snapshot, so its numbers agree while the campaign keeps writing.

- :mod:`.access`: opening a database, snapshots, agent ids, read-only SQL, the errors.
- :mod:`.agents`: the best agents, one agent, its lineage, diffs, its files.
- :mod:`.gitexport`: an agent's lineage as a git repository (and :mod:`.npy_text`, its textconv driver).
- :mod:`.lineage_tree`: the lineage tree, pruned, and as text.
- :mod:`.metrics`: progress, heatmap, success rates, campaigns compared.

The names below are imported from their modules on first use, so that ``python -m
openended.inspection.npy_text`` (run by ``git diff`` twice per changed array) starts without
loading the store and its dependencies.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from openended.inspection.access import (
        InspectionError,
        QueryRefused,
        open_db,
        read_only_query,
        resolve_agent,
        run_of,
        snapshot,
    )
    from openended.inspection.agents import diff, export, lineage, show, top
    from openended.inspection.gitexport import GitCommit, GitExport, export_git, export_lineage
    from openended.inspection.lineage_tree import format_tree, tree
    from openended.inspection.metrics import (
        Heatmap,
        campaign_metrics,
        compare,
        heatmap,
        progress_curve,
        success_rates,
    )

_MODULE_OF = {
    "InspectionError": "access", "QueryRefused": "access", "open_db": "access", "snapshot": "access",
    "resolve_agent": "access", "read_only_query": "access", "run_of": "access",
    "top": "agents", "show": "agents", "lineage": "agents", "diff": "agents", "export": "agents",
    "GitCommit": "gitexport", "GitExport": "gitexport", "export_git": "gitexport", "export_lineage": "gitexport",
    "tree": "lineage_tree", "format_tree": "lineage_tree",
    "Heatmap": "metrics", "progress_curve": "metrics", "heatmap": "metrics", "success_rates": "metrics",
    "campaign_metrics": "metrics", "compare": "metrics",
}

__all__ = [
    "InspectionError", "QueryRefused", "open_db", "snapshot", "run_of", "resolve_agent", "read_only_query",
    "top", "show", "lineage", "diff", "export",
    "GitCommit", "GitExport", "export_git", "export_lineage",
    "tree", "format_tree",
    "Heatmap", "progress_curve", "heatmap", "success_rates", "campaign_metrics", "compare",
]


def __getattr__(name: str) -> object:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
