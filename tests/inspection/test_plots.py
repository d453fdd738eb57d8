"""Figures from a real campaign database: the heatmap's pixels, the lineage tree's best path,
the success-rate bars, and the files `openended plot` writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from inspect_campaigns import CODE_CONFIG, build_campaign_db, build_code_db, cli, cli_json, rows
from matplotlib import colors as mcolors
from matplotlib import image as mimage
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from archive_db import ArchiveDB, Outcome, Proposal
from openended import inspection, plots


@pytest.fixture(scope="session")
def maze_db(tmp_path_factory, ray_address) -> Path:
    return build_campaign_db(tmp_path_factory)["path"]


@pytest.fixture(scope="module")
def code_db(tmp_path_factory) -> Path:
    return build_code_db(tmp_path_factory.mktemp("code") / "code.db")


def _render(hm: inspection.Heatmap):
    fig = Figure(figsize=(8, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    mesh = plots.draw_heatmap(ax, hm)
    fig.canvas.draw()
    return fig, ax, mesh, np.asarray(fig.canvas.buffer_rgba())[:, :, :3].astype(int)


def _cell_pixels(fig, ax, hm, img):
    """RGB at the centre of every grid cell, shape (ny, nx, 3)."""
    height = img.shape[0]
    xc = (hm.x_edges[:-1] + hm.x_edges[1:]) / 2
    yc = (hm.y_edges[:-1] + hm.y_edges[1:]) / 2
    out = np.zeros((len(yc), len(xc), 3), dtype=int)
    for iy, y in enumerate(yc):
        for ix, x in enumerate(xc):
            px, py = ax.transData.transform((x, y))
            out[iy, ix] = img[int(height - py), int(px)]
    return out


def test_heatmap_has_one_coloured_cell_per_elite(maze_db):
    with inspection.open_db(maze_db) as db:
        hm = inspection.heatmap(db)
        elites = db.elites()
        cells = [(e["cell"], e["fitness"]) for e in elites]
    # a grid archive: every elite owns one cell of the task's descriptor grid (29 x 13 for maze-medium)
    assert hm.values.shape == (13, 29) and hm.elites == len(elites) > 10
    assert hm.occupied == len(elites)
    flat = hm.values.T.ravel()  # the archive numbers cells in C order over (x, y): cell = ix * 13 + iy
    assert sorted((int(i), float(flat[i])) for i in np.flatnonzero(np.isfinite(flat))) == sorted(cells)

    fig, ax, mesh, img = _render(hm)
    pixels = _cell_pixels(fig, ax, hm, img)
    empty = np.array(mcolors.to_rgb(plots.EMPTY_COLOR)) * 255
    coloured = np.abs(pixels - empty).sum(axis=2) > 6
    assert coloured.sum() == len(elites)
    assert (coloured == np.isfinite(hm.values)).all()
    # each cell's colour is its elite's fitness on the colour map
    for iy, ix in zip(*np.nonzero(coloured), strict=True):
        want = np.array(mesh.cmap(mesh.norm(hm.values[iy, ix]))[:3]) * 255
        assert np.abs(pixels[iy, ix] - want).max() <= 3


def test_heatmap_bins_descriptors_of_own_cell_archives(code_db):
    """In 'all' and 'novelty' archives elites share grid cells: the best one colours the cell."""
    with inspection.open_db(code_db) as db:
        hm = inspection.heatmap(db)
        elites = db.elites()
    assert hm.elites == len(elites) == 6
    expected = {(0, 0): 0.5, (0, 1): 1.0, (3, 3): 3.0, (1, 2): 2.0, (2, 2): 0.1}  # (iy, ix): best fitness
    filled = zip(*np.nonzero(np.isfinite(hm.values)), strict=True)
    got = {(int(iy), int(ix)): hm.values[iy, ix] for iy, ix in filled}
    assert got == expected and hm.occupied == 5
    fig, ax, mesh, img = _render(hm)
    pixels = _cell_pixels(fig, ax, hm, img)
    empty = np.array(mcolors.to_rgb(plots.EMPTY_COLOR)) * 255
    assert (np.abs(pixels - empty).sum(axis=2) > 6).sum() == 5


def test_heatmap_projects_more_dimensions(tmp_path):
    schema = {"kind": "all", "space": {"names": ["a", "b", "c"], "lower": [0, 0, 0], "upper": [1, 1, 1],
                                       "bins": [2, 3, 4]}, "fitness_offset": 0.0, "k": 3}
    db = ArchiveDB(tmp_path / "d3.db")
    db.create_run(name="d3", task="t", seed=0, config=CODE_CONFIG, descriptor_schema=schema)
    points = {0: ([0.1, 0.1, 0.1], 1.0), 1: ([0.1, 0.9, 0.9], 2.0), 2: ([0.9, 0.1, 0.9], 5.0),
              3: ([0.9, 0.2, 0.1], 4.0)}
    db.propose([Proposal(id=i, parent_id=None, operator="seed", seed=i) for i in points])
    db.record([Outcome(id=i, status="archived", files={"g": b"%d" % i}, fitness=f, descriptors=d)
               for i, (d, f) in points.items()])
    db.set_elites({i: i for i in points})
    db.close()
    with inspection.open_db(tmp_path / "d3.db") as ro:
        ab = inspection.heatmap(ro, dims=(0, 1))
        cb = inspection.heatmap(ro, dims=(2, 0))
        with pytest.raises(inspection.InspectionError, match="distinct descriptor indices in 0..2"):
            inspection.heatmap(ro, dims=(0, 3))
        fig = plots.heatmap_figure(ro, (0, 1))
    assert ab.values.shape == (3, 2) and (ab.x_name, ab.y_name) == ("a", "b")
    # agents 2 and 3 share (a, b) bin (1, 0): the projection keeps the better one
    assert ab.values[0, 1] == 5.0 and ab.values[0, 0] == 1.0 and ab.values[2, 0] == 2.0 and ab.occupied == 3
    assert cb.values.shape == (2, 4) and cb.values[1, 3] == 5.0 and cb.values[1, 0] == 4.0 and cb.occupied == 4
    assert "projected" in fig.axes[0].get_title()


def test_lineage_tree_highlights_the_best_lineage(maze_db):
    with inspection.open_db(maze_db) as db:
        fig = plots.lineage_figure(db, max_nodes=500)
        lineage = inspection.lineage(db, inspection.resolve_agent(db, "best"))
        total = rows(maze_db, "SELECT COUNT(*) FROM agents")[0][0]
    ax = fig.axes[0]
    red = [c for c in ax.collections if hasattr(c, "get_segments")
           and np.allclose(c.get_colors()[0][:3], mcolors.to_rgb(plots._BEST))]
    grey = [c for c in ax.collections if hasattr(c, "get_segments") and c not in red]
    assert len(red) == 1 and len(red[0].get_segments()) == len(lineage) - 1
    # one root: every other agent has an edge
    assert len(red[0].get_segments()) + len(grey[0].get_segments()) == total - 1
    ys = sorted({round(float(seg[1][1])) for seg in red[0].get_segments()})
    assert ys == list(range(1, len(lineage)))  # one red edge per generation down to the best agent
    assert f"best agent #{lineage[-1]['id']}" in [t.get_text() for t in fig.legends[0].get_texts()]


def test_rates_figure_bars_are_the_success_rates(code_db):
    with inspection.open_db(code_db) as db:
        fig = plots.rates_figure(db)
        rates = inspection.success_rates(db)
    for ax, key in zip(fig.axes, ("operator", "model"), strict=True):
        widths = [p.get_width() for p in ax.patches]
        want = [0.0 if r["success_rate"] is None else 100 * r["success_rate"] for r in rates[key]]
        assert widths == pytest.approx(want)
        assert [t.get_text() for t in ax.get_yticklabels()] == [r["name"] for r in rates[key]]
    # llm_diff: children 1 and 7 archived, 3 failed, 6 still pending -> 2 of 3 finished
    assert next(r for r in rates["operator"] if r["name"] == "llm_diff")["success_rate"] == pytest.approx(2 / 3)


def test_progress_figure_plots_the_replayed_curves(maze_db):
    with inspection.open_db(maze_db) as db:
        fig = plots.progress_figure(db)
        curve = inspection.progress_curve(db)
        last = db.latest_stats()
    qd_line = fig.axes[0].get_lines()[0]
    assert list(qd_line.get_xdata()) == curve["evaluations"]
    assert qd_line.get_ydata()[-1] == pytest.approx(last["qd_score"], rel=1e-9)
    assert fig.axes[1].get_lines()[0].get_ydata()[-1] == pytest.approx(100 * last["coverage"])


def test_plot_command_writes_png_and_svg(maze_db, tmp_path):
    got = cli_json("plot", maze_db, "--out", tmp_path / "figs")
    names = sorted(Path(p).name for p in got["files"])
    assert names == sorted(f"{n}.{ext}" for n in plots.FIGURES for ext in ("png", "svg"))
    for p in got["files"]:
        p = Path(p)
        if p.suffix == ".png":
            img = mimage.imread(p)
            assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
            assert len(np.unique(img.reshape(-1, img.shape[2]), axis=0)) > 10  # not a blank canvas
        else:
            text = p.read_text()
            assert text.lstrip().startswith("<?xml") and "<svg" in text
    code, _, err = cli("plot", maze_db, "--out", tmp_path / "x", "--format", "jpg")
    assert code == 2 and "png" in err and "jpg" in err
    code, _, err = cli("plot", maze_db, "--out", tmp_path / "y", "--dims", "0,7")
    assert code == 2 and "descriptor indices" in err
