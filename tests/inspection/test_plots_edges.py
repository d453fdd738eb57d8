"""The figures' rough edges of issue 15, each on a small database built by hand: the heatmap draws the
task's maze and tells cells never reached from cells reached but not kept; its title fits the archive
kind; the progress plot draws the target; one operator is one bar; the lineage rim means something;
titles are never clipped, however narrow the figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib import colormaps
from matplotlib import colors as mcolors
from matplotlib.collections import LineCollection

from archive_db import ArchiveDB, Outcome, Proposal
from openended import inspection, plots
from openended.tasks import load_task

MAZE = load_task("maze-medium")
MAZE_SCHEMA = {"space": MAZE.descriptor_space, "fitness_offset": MAZE.fitness_lower}


def _db(path: Path, agents: list[tuple], *, task: str = "maze-medium", kind: str = "grid",
        schema: dict | None = None, config: dict | None = None, elites: list[int] | None = None) -> Path:
    """A campaign of ``agents`` (id, parent id, operator, status, fitness, descriptors); ``elites``
    (default: every archived agent) are the archive's members."""
    db = ArchiveDB(path)
    db.create_run(name="edges", task=task, seed=0, config=config or {"budget": {}},
                  descriptor_schema={**(schema or MAZE_SCHEMA), "kind": kind})
    db.propose([Proposal(id=a[0], parent_id=a[1], operator=a[2], seed=a[0]) for a in agents])
    db.record([Outcome(id=a[0], status=a[3], files={"weights.npy": b"%d" % a[0]}, fitness=a[4], descriptors=a[5],
                       cell=a[0] if a[3] == "archived" else None,
                       archive_event="new_cell" if a[3] == "archived" else None) for a in agents])
    members = [a[0] for a in agents if a[3] == "archived"] if elites is None else elites
    db.set_elites({i: i for i in members})
    db.close()
    return path


def _chain(n: int) -> list[tuple]:
    return [(i, None if i == 0 else i - 1, "seed" if i == 0 else "gaussian", "archived", -200.0 + i,
             [30.0 + 10 * i, 22.0]) for i in range(n)]


def _open(path: Path, draw):
    with inspection.open_db(path) as db:
        fig = draw(db)
    fig.canvas.draw()
    return fig


def _pixels(fig):
    return np.asarray(fig.canvas.buffer_rgba())[:, :, :3].astype(int)


def _pixel_at(fig, ax, x: float, y: float) -> np.ndarray:
    px, py = ax.transData.transform((x, y))
    return _pixels(fig)[int(round(fig.bbox.height - py)), int(round(px))]


def _rgb(color) -> np.ndarray:
    return np.array(mcolors.to_rgb(color)) * 255


def _within_figure(fig, text) -> bool:
    box = text.get_window_extent(fig.canvas.get_renderer())
    return box.x0 >= fig.bbox.x0 - 0.5 and box.x1 <= fig.bbox.x1 + 0.5 and box.y1 <= fig.bbox.y1 + 0.5


# --------------------------------------------------------------------------------------------
# heatmap


def test_heatmap_draws_the_maze_walls_start_and_exit(tmp_path):
    path = _db(tmp_path / "maze.db", _chain(3))
    task_map = MAZE.map()
    fig = _open(path, plots.heatmap_figure)
    ax = fig.axes[0]
    walls = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert len(walls) == 1 and np.allclose(np.array(walls[0].get_segments()).reshape(-1, 4), task_map.walls)
    offsets = [tuple(c.get_offsets()[0]) for c in ax.collections if c.get_label() in ("start", "exit")]
    assert offsets == [task_map.start, task_map.goal]
    # on the raster: the middle of an inner wall is dark, over whatever cell it crosses
    x1, y1, x2, y2 = task_map.walls[5]
    assert _pixel_at(fig, ax, (x1 + x2) / 2, (y1 + y2) / 2).max() < 90
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["wall", "start", "exit", "never reached"]
    # the map is in the coordinates of the first two descriptors: swapped axes get no map
    with inspection.open_db(path) as db:
        swapped = plots.heatmap_figure(db, (1, 0))
    assert not [c for c in swapped.axes[0].collections if isinstance(c, LineCollection)]


def test_a_task_without_a_map_gets_none(tmp_path):
    path = _db(tmp_path / "nomap.db", _chain(2), task="no-such-task")
    fig = _open(path, plots.heatmap_figure)
    assert not [c for c in fig.axes[0].collections if isinstance(c, LineCollection)]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["never reached"]


def test_cells_never_reached_are_grey_and_reached_ones_without_a_member_are_not(tmp_path):
    """A novelty archive kept agent 0 (cell near (30, 22)) but not agent 1 (it reached (150, 110)):
    that cell is drawn white, a cell nobody reached grey, and that grey is no colour of the fitness map."""
    agents = [(0, None, "seed", "archived", -250.0, [30.0, 22.0]),
              (1, 0, "gaussian", "rejected", -120.0, [150.0, 110.0])]
    path = _db(tmp_path / "nov.db", agents, task="no-such-task", kind="novelty", elites=[0])
    fig = _open(path, plots.heatmap_figure)
    ax = fig.axes[0]
    kept, reached, never = (_pixel_at(fig, ax, x, y) for x, y in ((30.0, 22.0), (150.0, 110.0), (250.0, 60.0)))
    assert np.abs(never - _rgb(plots.EMPTY_COLOR)).max() <= 2
    assert np.abs(reached - _rgb(plots.REACHED_COLOR)).max() <= 2
    assert np.abs(kept - _rgb(plots.EMPTY_COLOR)).max() > 30 and np.abs(kept - _rgb(plots.REACHED_COLOR)).max() > 30
    viridis = colormaps["viridis"](np.linspace(0, 1, 256))[:, :3] * 255
    for color in (plots.EMPTY_COLOR, plots.REACHED_COLOR):  # neither reads as some fitness
        assert np.abs(viridis - _rgb(color)).sum(axis=1).min() > 120
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["never reached", "reached, not in the archive"]


@pytest.mark.parametrize(("kind", "words", "not_words"), [
    ("all", ["all archive, 5 members", "best per cell of the 29 x 13 grid", "3 of 377 cells"], ["elites"]),
    ("novelty", ["novelty archive, 5 members", "best per cell"], ["elites"]),
    ("grid", ["grid archive: 3 elites in 3 of 377 cells"], ["members"]),
])
def test_the_heatmap_title_says_what_the_archive_kind_holds(tmp_path, kind, words, not_words):
    """In 'all' and 'novelty' archives members share the cells of the measurement grid: the title
    counts members and says each cell shows its best (it said '20000 elites in 308 cells')."""
    agents = [(i, None if i == 0 else 0, "gaussian", "archived", -200.0 + i, [30.0 + 10 * (i % 3), 22.0])
              for i in range(5)]
    elites = None if kind != "grid" else [0, 1, 2]
    fig = _open(_db(tmp_path / f"{kind}.db", agents, kind=kind, elites=elites), plots.heatmap_figure)
    title = fig.axes[0].title.get_text().replace("\n", " ")
    assert all(w in title for w in words) and not any(w in title for w in not_words), title
    assert _within_figure(fig, fig.axes[0].title)


def test_a_long_heatmap_title_on_a_narrow_grid_is_wrapped_not_clipped(tmp_path):
    schema = {"space": {"names": ["alpha", "beta", "gamma"], "lower": [0, 0, 0], "upper": [1, 1, 1],
                        "bins": [2, 9, 2]}, "fitness_offset": 0.0}
    agents = [(i, None, "seed", "archived", float(i), [0.1 * i, 0.2, 0.3]) for i in range(4)]
    fig = _open(_db(tmp_path / "narrow.db", agents, task="x", kind="all", schema=schema), plots.heatmap_figure)
    title = fig.axes[0].title
    assert "\n" in title.get_text() and "projected on alpha, beta" in title.get_text().replace("\n", " ")
    assert _within_figure(fig, title)


# --------------------------------------------------------------------------------------------
# progress


@pytest.mark.parametrize(("task", "config", "target"), [
    ("maze-medium", {"budget": {}}, -5.0),  # the task's [fitness] target
    ("maze-medium", {"budget": {"target_fitness": -150.0}}, -150.0),  # the campaign's own
    ("no-such-task", {"budget": {}}, None),
])
def test_the_progress_plot_draws_the_target_fitness(tmp_path, task, config, target):
    fig = _open(_db(tmp_path / "p.db", _chain(4), task=task, config=config), plots.progress_figure)
    best_ax = fig.axes[2]
    dashed = [line for line in best_ax.get_lines() if line.get_linestyle() == "--"]
    if target is None:
        assert not dashed and best_ax.get_legend() is None
        return
    assert len(dashed) == 1 and set(dashed[0].get_ydata()) == {target}
    assert dashed[0].get_label() == f"target {target:g}"
    low, high = best_ax.get_ylim()
    assert low <= target <= high  # in view even when far above the best fitness so far


# --------------------------------------------------------------------------------------------
# operators


def test_one_operator_without_models_is_one_panel_with_one_bar(tmp_path):
    """A gaussian-only campaign: one panel, one bar of sensible height, no 'model: none' panel."""
    agents = _chain(4) + [(4, 3, "gaussian", "rejected", -300.0, [40.0, 22.0])]
    fig = _open(_db(tmp_path / "ops.db", agents), plots.rates_figure)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["gaussian"] and len(ax.patches) == 1
    assert ax.patches[0].get_width() == pytest.approx(100 * 3 / 4)
    bar = ax.patches[0].get_window_extent()
    assert bar.height <= 0.5 * fig.dpi and bar.height <= 0.7 * ax.bbox.height  # it filled 90% of its panel
    assert fig.get_figheight() <= 2.0
    assert _within_figure(fig, ax.title)


# --------------------------------------------------------------------------------------------
# lineage tree


@pytest.mark.parametrize(("kind", "rim"), [("grid", "current elite"), ("novelty", "archive member"), ("all", None)])
def test_the_lineage_rim_marks_members_only_where_the_archive_keeps_a_subset(tmp_path, kind, rim):
    elites = [0, 3] if kind != "all" else None
    fig = _open(_db(tmp_path / "l.db", _chain(5), kind=kind, elites=elites), plots.lineage_figure)
    ax = fig.axes[0]
    nodes = next(c for c in ax.collections if c.get_array() is not None and len(c.get_offsets()) == 5)
    rimmed = [tuple(np.round(o).astype(int)) for o, e in zip(nodes.get_offsets(), nodes.get_edgecolors(), strict=True)
              if e[3] > 0]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    if rim is None:  # every evaluated child is a member: a rim on each would say nothing
        assert rimmed == [] and not {"current elite", "archive member"} & set(labels)
    else:
        assert sorted(y for _, y in rimmed) == [0, 3] and rim in labels  # x is 0 on a chain, y the depth
    assert "best agent #4" in labels and "the best agent's lineage" in labels


@pytest.mark.parametrize("n", [1, 2])
def test_the_lineage_title_is_not_clipped_on_a_narrow_tree(tmp_path, n):
    fig = _open(_db(tmp_path / f"t{n}.db", _chain(n)), plots.lineage_figure)
    title = fig.axes[0].title
    assert title.get_text().startswith("lineage tree (") and _within_figure(fig, title)
    assert fig.legends and _within_figure(fig, fig.legends[0])
    low, high = sorted(fig.axes[0].get_ylim())
    depths = [t for t in fig.axes[0].get_yticks() if low <= t <= high]
    assert depths and all(float(t).is_integer() for t in depths)  # no depth -0.4
    if n == 1:
        assert "(1 agent)" in title.get_text()
