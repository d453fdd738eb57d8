"""Figures of a campaign: the archive heatmap, progress curves, the lineage tree, operator/model rates.

Built on :class:`matplotlib.figure.Figure` directly (the Agg renderer, no pyplot state), so plotting
works headless and never touches a user's interactive backend. Data come from
:mod:`openended.inspection`; these functions only draw.

    openended plot campaign.db --out figures/
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from archive_db import ArchiveDB
from openended import inspection

__all__ = ["EMPTY_COLOR", "draw_heatmap", "heatmap_figure", "progress_figure", "lineage_figure", "rates_figure",
           "plot_all", "FIGURES"]

#: Background of an empty archive cell (elites are drawn with the viridis colour map over it).
EMPTY_COLOR = "#e6e6e6"
_BEST = "#d62728"
_FORMATS = ("png", "svg")


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # attach the Agg canvas: savefig and draw need no pyplot
    return fig


# --------------------------------------------------------------------------------------------
# archive heatmap


def draw_heatmap(ax, hm: inspection.Heatmap):
    """Draw ``hm`` on ``ax``: one coloured cell per occupied grid cell (its best elite's fitness),
    empty cells in :data:`EMPTY_COLOR`. Returns the QuadMesh (its array is the plotted data)."""
    ax.set_facecolor(EMPTY_COLOR)
    mesh = ax.pcolormesh(hm.x_edges, hm.y_edges, np.ma.masked_invalid(hm.values), cmap="viridis", shading="flat")
    ax.set_xlim(hm.x_edges[0], hm.x_edges[-1])
    ax.set_ylim(hm.y_edges[0], hm.y_edges[-1])
    ax.set_xlabel(hm.x_name)
    if hm.y_name:
        ax.set_ylabel(hm.y_name)
    else:
        ax.set_yticks([])
    return mesh


def heatmap_figure(db: ArchiveDB, dims: Sequence[int] = (0, 1)) -> Figure:
    """The archive's elites on the descriptor grid, coloured by fitness (see :func:`inspection.heatmap`)."""
    hm = inspection.heatmap(db, dims)
    nx, ny = hm.values.shape[1], hm.values.shape[0]
    aspect = min(max(nx / max(ny, 1), 0.5), 3.0)
    fig = _figure(4.0 * aspect + 1.5, 4.0 if ny > 1 else 1.8)
    ax = fig.add_subplot()
    mesh = draw_heatmap(ax, hm)
    fig.colorbar(mesh, ax=ax, label="best fitness in cell")
    projected = f" (projected on {hm.x_name}, {hm.y_name})" if hm.n_descriptors > 2 else ""
    ax.set_title(f"archive{projected}: {hm.elites} elites in {hm.occupied} of {hm.values.size} cells")
    return fig


# --------------------------------------------------------------------------------------------
# progress


def progress_figure(db: ArchiveDB) -> Figure:
    """QD score, coverage and best fitness against the number of finished children."""
    curve = inspection.progress_curve(db)
    x = curve["evaluations"]
    best = [np.nan if b is None else b for b in curve["best_fitness"]]
    fig = _figure(7.0, 6.0)
    axes = fig.subplots(3, 1, sharex=True)
    for ax, values, label in ((axes[0], curve["qd_score"], "QD score"),
                              (axes[1], [100.0 * c for c in curve["coverage"]], "coverage (%)"),
                              (axes[2], best, "best fitness")):
        ax.plot(x, values, color="#1f77b4", lw=1.5)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("evaluations (children finished)")
    axes[0].set_title(f"progress ({curve['kind']} archive, {curve['cells']} cells)")
    return fig


# --------------------------------------------------------------------------------------------
# lineage tree


def _layout(nodes: list[dict]) -> dict[int, tuple[float, float]]:
    """Tidy-ish tree layout: leaves on consecutive x positions in id order, a parent centred over
    its first and last child, y = depth. Iterative (lineages can be thousands deep)."""
    kids: dict[int | None, list[int]] = {}
    depth = {}
    for n in nodes:
        kids.setdefault(n["parent_id"], []).append(n["id"])
        depth[n["id"]] = n["depth"]
    x: dict[int, float] = {}
    next_leaf = 0.0
    for root in kids.get(None, []):
        stack = [(root, False)]
        while stack:
            nid, expanded = stack.pop()
            children = kids.get(nid, [])
            if not children:
                x[nid] = next_leaf
                next_leaf += 1.0
            elif expanded:
                x[nid] = (x[children[0]] + x[children[-1]]) / 2.0
            else:
                stack.append((nid, True))
                stack.extend((c, False) for c in reversed(children))
    return {nid: (x[nid], float(depth[nid])) for nid in x}


def lineage_figure(db: ArchiveDB, max_nodes: int = 500) -> Figure:
    """The lineage tree (pruned to ``max_nodes`` like ``openended tree``), nodes coloured by
    fitness, the best agent's lineage drawn in red and the best agent as a star."""
    t = inspection.tree(db, max_nodes=max_nodes)
    nodes = t["nodes"]
    pos = _layout(nodes)
    deepest = max((p[1] for p in pos.values()), default=0)
    fig = _figure(min(4.0 + 0.06 * len(pos), 16.0), min(3.0 + 0.45 * deepest, 12.0))
    ax = fig.add_subplot()
    segments: list[list[tuple[float, float]]] = []
    best_segments: list[list[tuple[float, float]]] = []
    for n in nodes:
        if n["parent_id"] is not None and n["parent_id"] in pos:
            seg = [pos[n["parent_id"]], pos[n["id"]]]
            (best_segments if n["best_lineage"] else segments).append(seg)
    ax.add_collection(LineCollection(segments, colors="#9a9a9a", linewidths=0.8, zorder=1))
    ax.add_collection(LineCollection(best_segments, colors=_BEST, linewidths=2.5, zorder=2))
    evaluated = [n for n in nodes if n["fitness"] is not None]
    others = [n for n in nodes if n["fitness"] is None]
    if evaluated:
        sc = ax.scatter([pos[n["id"]][0] for n in evaluated], [pos[n["id"]][1] for n in evaluated],
                        c=[n["fitness"] for n in evaluated], cmap="viridis", s=28,
                        edgecolors=["black" if n["elite"] else "none" for n in evaluated], linewidths=0.6, zorder=3)
        fig.colorbar(sc, ax=ax, label="fitness")
    if others:
        ax.scatter([pos[n["id"]][0] for n in others], [pos[n["id"]][1] for n in others], marker="x",
                   color="#7f7f7f", s=18, zorder=3, label="failed / not evaluated")
    if t["best_agent"] is not None and t["best_agent"] in pos:
        bx, by = pos[t["best_agent"]]
        ax.scatter([bx], [by], marker="*", s=260, color=_BEST, edgecolors="black", zorder=4,
                   label=f"best agent #{t['best_agent']}")
        ax.legend(loc="lower left", fontsize="small")
    ax.autoscale_view()
    ax.invert_yaxis()
    ax.set_ylabel("depth")
    ax.set_xticks([])
    shown = f"{t['shown']} of {t['total']} agents" if t["pruned"] else f"{t['total']} agents"
    ax.set_title(f"lineage tree ({shown}); red: the best agent's lineage; black rim: current elite")
    return fig


# --------------------------------------------------------------------------------------------
# operator and model success rates


def rates_figure(db: ArchiveDB) -> Figure:
    """Success rate (share of finished children archived) per operator and per model."""
    rates = inspection.success_rates(db)
    rows = max(len(rates["operator"]), len(rates["model"]), 1)
    fig = _figure(7.0, 1.6 + 0.45 * rows * 2)
    axes = fig.subplots(2, 1)
    for ax, key in zip(axes, ("operator", "model"), strict=True):
        entries = rates[key]
        names = [e["name"] for e in entries]
        values = [0.0 if e["success_rate"] is None else 100.0 * e["success_rate"] for e in entries]
        ypos = np.arange(len(entries))
        ax.barh(ypos, values, color="#2ca02c" if key == "operator" else "#9467bd")
        ax.set_yticks(ypos, names)
        ax.set_xlim(0, 100)
        ax.invert_yaxis()
        for y, e, v in zip(ypos, entries, values, strict=True):
            ax.text(min(v + 1.0, 80.0), y, f"{e['archived']}/{e['finished']} archived", va="center", fontsize="small")
        ax.set_xlabel("success rate (% of finished children archived)")
        ax.set_title(f"by {key}" + ("" if entries else " (no children yet)"))
    return fig


# --------------------------------------------------------------------------------------------
# everything

#: The figures :func:`plot_all` writes, by file name stem.
FIGURES = ("heatmap", "progress", "lineage_tree", "operators")


def plot_all(db_path: str | os.PathLike, out_dir: str | os.PathLike, *, formats: Sequence[str] = _FORMATS,
             dims: Sequence[int] = (0, 1), max_nodes: int = 500) -> list[Path]:
    """Write every figure of the campaign in ``db_path`` to ``out_dir`` as ``<name>.<format>``
    (names in :data:`FIGURES`); returns the files written."""
    formats = tuple(formats)
    bad = [f for f in formats if f not in _FORMATS]
    if bad or not formats:
        raise inspection.InspectionError(f"plot formats must be among {list(_FORMATS)}, not {list(formats)}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise inspection.InspectionError(f"plot: {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with inspection.open_db(db_path) as db, inspection.snapshot(db):
        figures = {
            "heatmap": heatmap_figure(db, dims),
            "progress": progress_figure(db),
            "lineage_tree": lineage_figure(db, max_nodes=max_nodes),
            "operators": rates_figure(db),
        }
    for name, fig in figures.items():
        for fmt in formats:
            path = out / f"{name}.{fmt}"
            fig.savefig(path, format=fmt, dpi=110, metadata={"Software": "openended"} if fmt == "png" else None)
            written.append(path)
    return written
