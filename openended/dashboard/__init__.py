"""The live campaign dashboard of ``openended serve``: progress curves, the archive heatmap (over
the task's map when it has one), the best lineage, operator/model success, failures by stage and
kind, children per second; the page polls a JSON route and redraws while the campaign runs.

- :mod:`.data`: what the figures draw, read from the database in one snapshot (typed records).
- :mod:`.taskmap`: the task's map (walls, start, exit), when it has one.
- :mod:`.plugin`: the datasette routes (``/-/dashboard``, ``/-/dashboard.json``, ``/-/dashboard.js``).
- ``static/``: the page and its hand-written script (inline SVG; no CDN, no internet).
"""

from __future__ import annotations

from openended.dashboard.data import Dashboard, collect
from openended.dashboard.plugin import DATA_PATH, PAGE_PATH, SCRIPT_PATH, register_plugin

__all__ = ["DATA_PATH", "PAGE_PATH", "SCRIPT_PATH", "Dashboard", "collect", "register_plugin"]
