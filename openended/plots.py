"""Figures of a campaign: the archive heatmap, progress curves, the lineage tree, operator/model rates.

Built on :class:`matplotlib.figure.Figure` directly (the Agg renderer, no pyplot state), so plotting
works headless and never touches a user's interactive backend. Data come from
:mod:`openended.inspection`; these functions only draw.

    openended plot campaign.db --out figures/
"""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from archive_db import ArchiveDB
from openended import inspection
from openended.qd.measure import measurement_bins

__all__ = ["EMPTY_COLOR", "REACHED_COLOR", "draw_heatmap", "draw_map", "heatmap_figure", "progress_figure",
           "lineage_figure", "rates_figure", "plot_all", "FIGURES"]

#: Background of a heatmap cell no evaluated child ever reached (elites are drawn with the viridis colour
#: map over it, whose darkest end is a deep purple, never grey).
EMPTY_COLOR = "#d9d9d9"
#: A cell some evaluated child reached but whose archive kept no member there (novelty, cvt, projections).
REACHED_COLOR = "#ffffff"
_BEST = "#d62728"
_WALL = "#111111"
_FORMATS = ("png", "svg")


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # attach the Agg canvas: savefig and draw need no pyplot
    return fig


def _fit_title(ax, text: str) -> None:
    """Set ``ax``'s title, wrapped onto more lines until it lies within the figure's width (a long
    title on a narrow figure was clipped at both sides)."""
    fig = ax.get_figure()
    title = ax.set_title(text)
    width = len(text)
    for _ in range(8):
        fig.draw_without_rendering()
        box, page = title.get_window_extent(), fig.bbox
        if box.x0 >= page.x0 and box.x1 <= page.x1:
            return
        width = max(12, int(width * 0.95 * min(page.width / max(box.width, 1.0), 1.0)))
        title.set_text("\n".join(textwrap.wrap(text, width)))


def _task_of(run: dict):
    """The campaign's task loaded as it is now (its map, its target), or None when it cannot be (a
    user's task folder that moved or another machine's path)."""
    from openended.tasks import load_task

    try:
        return load_task(str(run["task"]))
    except Exception:  # noqa: BLE001 - the figures are drawn without the task's extras
        return None


def _map_of(task):
    """The task's map (:meth:`openended.tasks.Task.map`), None without one or when it cannot be read."""
    from openended.tasks import TaskError

    try:
        return None if task is None else task.map()
    except TaskError:
        return None


def _target(run: dict, task) -> float | None:
    """The campaign's target fitness: its budget's, else the task's ``[fitness] target``."""
    target = ((run.get("config") or {}).get("budget") or {}).get("target_fitness")
    if target is None and task is not None:
        target = task.fitness_target
    return None if target is None else float(target)


# --------------------------------------------------------------------------------------------
# archive heatmap


def draw_heatmap(ax, hm: inspection.Heatmap, reached: np.ndarray | None = None):
    """Draw ``hm`` on ``ax``: one coloured cell per occupied grid cell (its best elite's fitness),
    cells never reached in :data:`EMPTY_COLOR`; with ``reached`` (bool, shaped like ``hm.values``),
    cells reached but left without an archive member in :data:`REACHED_COLOR`. Returns the QuadMesh
    of the fitness colours (its array is the plotted data)."""
    ax.set_facecolor(EMPTY_COLOR)
    if reached is not None:
        kept_out = np.ma.masked_where(~(reached & ~np.isfinite(hm.values)), np.zeros(hm.values.shape))
        ax.pcolormesh(hm.x_edges, hm.y_edges, kept_out, cmap=ListedColormap([REACHED_COLOR]), shading="flat")
    mesh = ax.pcolormesh(hm.x_edges, hm.y_edges, np.ma.masked_invalid(hm.values), cmap="viridis", shading="flat")
    ax.set_xlim(hm.x_edges[0], hm.x_edges[-1])
    ax.set_ylim(hm.y_edges[0], hm.y_edges[-1])
    ax.set_xlabel(hm.x_name)
    if hm.y_name:
        ax.set_ylabel(hm.y_name)
    else:
        ax.set_yticks([])
    return mesh


def draw_map(ax, task_map) -> list:
    """Draw a task's map (:class:`openended.tasks.TaskMap`) over a heatmap in its descriptor
    coordinates: the walls, the start and the exit. Returns the artists, for a legend."""
    walls = LineCollection(task_map.walls.reshape(-1, 2, 2), colors=_WALL, linewidths=2.0, zorder=4, label="wall",
                           clip_on=False)  # the outer walls lie on the frame
    ax.add_collection(walls, autolim=False)
    start = ax.scatter(*task_map.start, marker="o", s=70, color="white", edgecolors=_WALL, linewidths=1.5,
                       zorder=5, label="start")
    goal = ax.scatter(*task_map.goal, marker="*", s=220, color=_BEST, edgecolors=_WALL, linewidths=0.8,
                      zorder=5, label="exit")
    return [walls, start, goal]


def _reached(db: ArchiveDB, run: dict, hm: inspection.Heatmap) -> np.ndarray:
    """Which heatmap cells some evaluated child (archived or not) fell in, on ``hm``'s grid."""
    rows = db.conn.execute("SELECT descriptors FROM agents WHERE descriptors IS NOT NULL").fetchall()
    reached = np.zeros(hm.values.shape, dtype=bool)
    if rows:
        bins = measurement_bins(run["descriptor_schema"], json.loads("[" + ",".join(r[0] for r in rows) + "]"))
        reached[bins[:, hm.dims[1]] if len(hm.dims) == 2 else 0, bins[:, hm.dims[0]]] = True
    return reached | np.isfinite(hm.values)


def _heatmap_title(kind: str | None, hm: inspection.Heatmap) -> str:
    nx, ny = hm.values.shape[1], hm.values.shape[0]
    grid = f"{nx} x {ny} grid" if hm.y_name else f"{nx} bins"
    projected = f", projected on {hm.x_name}, {hm.y_name}" if hm.n_descriptors > 2 else ""
    if kind in ("all", "novelty"):  # members keep no cell of their own: shown on the measurement grid
        return (f"{kind} archive, {hm.elites} members: the best per cell of the {grid}{projected}; "
                f"{hm.occupied} of {hm.values.size} cells")
    if kind == "cvt" or hm.n_descriptors > 2:
        return (f"{kind or 'grid'} archive: {hm.elites} elites, the best per cell of the {grid}{projected}: "
                f"{hm.occupied} of {hm.values.size} cells")
    return f"{kind or 'grid'} archive: {hm.elites} elites in {hm.occupied} of {hm.values.size} cells"


def heatmap_figure(db: ArchiveDB, dims: Sequence[int] = (0, 1)) -> Figure:
    """The archive on the descriptor grid, coloured by fitness (see :func:`inspection.heatmap`); the
    task's map (walls, start, exit) over it when the task has one and the axes are its first two
    descriptors; cells no child reached in grey, apart from those reached but left out of the archive."""
    hm = inspection.heatmap(db, dims)
    with inspection.snapshot(db):
        run = inspection.run_of(db)
        reached = _reached(db, run, hm)
    task_map = _map_of(_task_of(run)) if hm.dims == (0, 1) else None
    nx, ny = hm.values.shape[1], hm.values.shape[0]
    aspect = min(max(nx / max(ny, 1), 0.5), 3.0)
    fig = _figure(4.0 * aspect + 1.5, 4.6 if ny > 1 else 2.4)
    ax = fig.add_subplot()
    mesh = draw_heatmap(ax, hm, reached)
    fig.colorbar(mesh, ax=ax, label="best fitness in cell")
    handles = draw_map(ax, task_map) if task_map is not None else []
    handles.append(Patch(facecolor=EMPTY_COLOR, edgecolor="#999999", label="never reached"))
    if (reached & ~np.isfinite(hm.values)).any():
        handles.append(Patch(facecolor=REACHED_COLOR, edgecolor="#999999", label="reached, not in the archive"))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize="small", frameon=False)
    _fit_title(ax, _heatmap_title(run["descriptor_schema"].get("kind"), hm))
    return fig


# --------------------------------------------------------------------------------------------
# progress


def progress_figure(db: ArchiveDB) -> Figure:
    """QD score, coverage and best fitness against the number of finished children; the target
    fitness as a dashed line when the campaign or its task has one."""
    curve = inspection.progress_curve(db)
    with inspection.snapshot(db):
        run = inspection.run_of(db)
    target = _target(run, _task_of(run))
    x = curve["evaluations"]
    best = [np.nan if b is None else b for b in curve["best_fitness"]]
    fig = _figure(7.0, 6.0)
    axes = fig.subplots(3, 1, sharex=True)
    for ax, values, label in ((axes[0], curve["qd_score"], "QD score"),
                              (axes[1], [100.0 * c for c in curve["coverage"]], "coverage (%)"),
                              (axes[2], best, "best fitness")):
        ax.plot(x, values, color="#1f77b4", lw=1.5, label=label)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    if target is not None:
        axes[2].axhline(target, color=_BEST, ls="--", lw=1.2, label=f"target {target:g}")
        axes[2].legend(loc="lower right", fontsize="small")
    axes[-1].set_xlabel("evaluations (children finished)")
    _fit_title(axes[0], f"progress ({curve['kind']} archive, {curve['cells']} cells)")
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


#: What the black rim of a lineage node means, by archive kind: in an ``all`` archive every evaluated
#: child is a member, so a rim would mark them all and none is drawn.
_RIM = {"grid": "current elite", "cvt": "current elite", "novelty": "archive member"}


def lineage_figure(db: ArchiveDB, max_nodes: int = 500) -> Figure:
    """The lineage tree (pruned to ``max_nodes`` like ``openended tree``), nodes coloured by
    fitness, the best agent's lineage drawn in red and the best agent as a star; a black rim marks
    the archive's current elites (members, for a novelty archive; none for an ``all`` archive)."""
    t = inspection.tree(db, max_nodes=max_nodes)
    with inspection.snapshot(db):
        kind = (inspection.run_of(db)["descriptor_schema"] or {}).get("kind")
    rim = _RIM.get(kind or "grid")
    nodes = t["nodes"]
    pos = _layout(nodes)
    deepest = max((p[1] for p in pos.values()), default=0)
    fig = _figure(min(5.0 + 0.06 * len(pos), 16.0), min(3.4 + 0.45 * deepest, 12.0))
    ax = fig.add_subplot()
    segments: list[list[tuple[float, float]]] = []
    best_segments: list[list[tuple[float, float]]] = []
    for n in nodes:
        if n["parent_id"] is not None and n["parent_id"] in pos:
            seg = [pos[n["parent_id"]], pos[n["id"]]]
            (best_segments if n["best_lineage"] else segments).append(seg)
    ax.add_collection(LineCollection(segments, colors="#9a9a9a", linewidths=0.8, zorder=1))
    ax.add_collection(LineCollection(best_segments, colors=_BEST, linewidths=2.5, zorder=2))
    handles: list = [Line2D([], [], color=_BEST, lw=2.5, label="the best agent's lineage")] if best_segments else []
    evaluated = [n for n in nodes if n["fitness"] is not None]
    others = [n for n in nodes if n["fitness"] is None]
    if evaluated:
        rims = ["black" if rim and n["elite"] else "none" for n in evaluated]
        sc = ax.scatter([pos[n["id"]][0] for n in evaluated], [pos[n["id"]][1] for n in evaluated],
                        c=[n["fitness"] for n in evaluated], cmap="viridis", s=28,
                        edgecolors=rims, linewidths=0.9, zorder=3)
        fig.colorbar(sc, ax=ax, label="fitness")
        if rim and "black" in rims:
            handles.append(Line2D([], [], ls="", marker="o", markerfacecolor="white", markeredgecolor="black",
                                  markeredgewidth=0.9, label=rim))
    if others:
        handles.append(ax.scatter([pos[n["id"]][0] for n in others], [pos[n["id"]][1] for n in others], marker="x",
                                  color="#7f7f7f", s=18, zorder=3, label="failed / not evaluated"))
    if t["best_agent"] is not None and t["best_agent"] in pos:
        bx, by = pos[t["best_agent"]]
        handles.append(ax.scatter([bx], [by], marker="*", s=260, color=_BEST, edgecolors="black", zorder=4,
                                  label=f"best agent #{t['best_agent']}"))
    if handles:  # below the tree, where it covers no node
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4 if len(pos) > 40 else 2),
                   fontsize="small", frameon=False)
    if len(pos) == 1:  # one node: autoscale would give a zero-width view
        ax.set_xlim(-1.0, 1.0)
        ax.set_ylim(-0.5, 0.5)
    else:
        ax.margins(x=0.04 if len({p[0] for p in pos.values()}) > 1 else 0.5, y=0.08)
        ax.autoscale_view()
    ax.invert_yaxis()
    ax.set_ylabel("depth")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # depths are whole numbers
    ax.set_xticks([])
    agents = f"{t['total']} agent" + ("" if t["total"] == 1 else "s")
    shown = f"{t['shown']} of {agents}" if t["pruned"] else agents
    _fit_title(ax, f"lineage tree ({shown})" + (f", {kind} archive" if kind else ""))
    return fig


# --------------------------------------------------------------------------------------------
# operator and model success rates


def rates_figure(db: ArchiveDB) -> Figure:
    """Success rate (share of finished children archived) per operator, and per model when a model
    made any child (a campaign without one gets no panel of a single "none" bar)."""
    rates = inspection.success_rates(db)
    keys = ["operator"] + (["model"] if any(e["name"] != "none" for e in rates["model"]) else [])
    heights = [0.8 + 0.3 * max(len(rates[k]), 1) for k in keys]  # titles and ticks, then 0.3 in per bar
    fig = _figure(7.0, 0.3 + sum(heights))
    axes = fig.subplots(len(keys), 1, squeeze=False, height_ratios=heights)[:, 0]
    for ax, key in zip(axes, keys, strict=True):
        entries = rates[key]
        names = [e["name"] for e in entries]
        values = [0.0 if e["success_rate"] is None else 100.0 * e["success_rate"] for e in entries]
        ypos = np.arange(len(entries))
        ax.barh(ypos, values, height=0.6, color="#2ca02c" if key == "operator" else "#9467bd")
        ax.set_yticks(ypos, names)
        ax.set_xlim(0, 100)
        ax.set_ylim(max(len(entries), 1) - 0.5, -0.5)  # bar i at y=i, top down, each the same height
        for y, e, v in zip(ypos, entries, values, strict=True):
            ax.text(min(v + 1.0, 80.0), y, f"{e['archived']}/{e['finished']} archived", va="center", fontsize="small")
        ax.set_title(f"by {key}" + ("" if entries else " (no children yet)"), fontsize="medium")
    axes[-1].set_xlabel("success rate (% of finished children archived)")
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
