"""The deceptive-maze task (openended/tasks/maze): map parsing, simulator, evaluator, CLI."""

import importlib.util
import io
import json
import math
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

MAZE_DIR = Path(__file__).resolve().parents[2] / "openended" / "tasks" / "maze"


if str(MAZE_DIR) not in sys.path:  # the task's modules import each other from their own folder
    sys.path.insert(0, str(MAZE_DIR))

import maze_sim as sim  # noqa: E402


def _load_evaluator():
    name = "_maze_evaluate_under_test"
    spec = importlib.util.spec_from_file_location(name, MAZE_DIR / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


ev = _load_evaluator()

MEDIUM = sim.load_maze("medium")
HARD = sim.load_maze("hard")


def npy(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array))
    return buf.getvalue()


# --- maps -------------------------------------------------------------------------------------


def test_parse_medium():
    assert MEDIUM.walls.shape == (11, 4)
    np.testing.assert_array_equal(MEDIUM.start, [30, 22])
    assert MEDIUM.heading == 0.0
    np.testing.assert_array_equal(MEDIUM.goal, [270, 100])
    assert MEDIUM.bounds == (5.0, 5.0, 295.0, 135.0)
    np.testing.assert_array_equal(MEDIUM.walls[0], [5, 5, 295, 5])
    np.testing.assert_array_equal(MEDIUM.walls[-1], [271, 135, 237, 88])


def test_parse_hard():
    assert HARD.walls.shape == (11, 4)
    np.testing.assert_array_equal(HARD.start, [36, 184])
    np.testing.assert_array_equal(HARD.goal, [31, 20])
    assert HARD.bounds == (5.0, 5.0, 200.0, 200.0)
    np.testing.assert_array_equal(HARD.walls[-1], [56, 55, 133, 30])


def test_maps_are_copies_of_shared_data():
    shared = Path("/work/shared/data/mazes")
    for name in ("medium", "hard"):
        ours = (MAZE_DIR / "maps" / f"{name}.txt").read_text()
        assert ours.startswith("#")  # attribution / comment header kept
        if (shared / f"{name}.txt").exists():
            assert ours == (shared / f"{name}.txt").read_text()


def test_parse_errors_name_the_line():
    with pytest.raises(ValueError, match="unexpected end"):
        sim.parse_maze("2\n0 0\n0\n1 1\n0 0 1 1\n")
    with pytest.raises(ValueError, match=r"<maze>:5: expected goal"):
        sim.parse_maze("# c\n1\n0 0\n0\nabc\n0 0 1 1\n")
    with pytest.raises(ValueError, match="more lines"):
        sim.parse_maze("1\n0 0\n0\n1 1\n0 0 1 1\n2 2 3 3\n")
    with pytest.raises(ValueError, match="unknown maze"):
        sim.load_maze("nosuchmaze")


# --- sensors ----------------------------------------------------------------------------------


def test_rangefinders_at_medium_start_match_hand_computation():
    rf = sim.rangefinders(MEDIUM.walls, MEDIUM.start[None, :], np.array([MEDIUM.heading]))[0]
    # angles -90, -45, 0, 45, 90, -180 from heading 0 at (30, 22)
    assert rf[0] == pytest.approx(17.0)  # straight down to the bottom wall y = 5
    assert rf[1] == pytest.approx(17.0 * math.sqrt(2))  # diagonal down-right to y = 5
    assert rf[2] == pytest.approx(2411 / 37)  # wall (114,5)-(73,42) crosses y = 22 at x = 3521/37
    assert rf[4] == pytest.approx(100.0)  # up: the top wall (y = 135) is out of range
    assert rf[5] == pytest.approx(25.0)  # behind: left wall x = 5
    ref = [sim._ref_rangefinder(MEDIUM.walls, 30.0, 22.0, a) for a in sim.RANGEFINDER_ANGLES]
    np.testing.assert_allclose(rf, ref, atol=1e-12)


@pytest.mark.parametrize("heading", [0.0, 30.0, 90.0, 200.0, 359.0])
@pytest.mark.parametrize(
    "rel, slice_index",
    [(0.0, 0), (10.0, 0), (-10.0, 0), (44.0, 0), (316.0, 0), (46.0, 1), (90.0, 1), (134.0, 1),
     (136.0, 2), (180.0, 2), (224.0, 2), (226.0, 3), (270.0, 3), (314.0, 3)],
)
def test_radar_picks_the_slice_holding_the_goal(heading, rel, slice_index):
    pos = np.array([[100.0, 60.0]])
    a = math.radians(heading + rel)
    goal = pos[0] + 50.0 * np.array([math.cos(a), math.sin(a)])
    radar = sim.radars(goal, pos, np.array([heading]))[0]
    expected = np.zeros(4)
    expected[slice_index] = 1.0
    np.testing.assert_array_equal(radar, expected)
    assert sim._ref_radar(goal, 100.0, 60.0, heading) == expected.tolist()


def test_wall_distances():
    walls = np.array([[0.0, 0.0, 10.0, 0.0]])
    pos = np.array([[5.0, 3.0], [-3.0, 4.0], [14.0, 3.0]])
    np.testing.assert_allclose(sim.wall_distances(walls, pos)[:, 0], [3.0, 5.0, 5.0])


# --- simulator --------------------------------------------------------------------------------


def test_param_count():
    assert sim.PARAM_COUNT == 11 * 10 + 10 + 10 * 2 + 2 == 142


@pytest.mark.parametrize("maze", [MEDIUM, HARD], ids=["medium", "hard"])
def test_vectorised_matches_scalar_reference(maze):
    rng = np.random.default_rng(123)
    weights = rng.standard_normal((10, sim.PARAM_COUNT)) * rng.choice([0.5, 1.0, 2.0], size=(10, 1))
    final = sim.simulate(maze, weights)
    assert final.shape == (10, 2)
    reference = np.array([sim.simulate_one_reference(maze, w) for w in weights])
    np.testing.assert_allclose(final, reference, atol=1e-6, rtol=0)
    # most random controllers do move
    assert np.sum(np.hypot(*(final - maze.start).T) > 1.0) >= 5


def test_zero_weights_stand_still_and_batch_of_one():
    # all-zero weights: outputs are exactly 0.5, so the robot never accelerates
    np.testing.assert_array_equal(sim.simulate(MEDIUM, np.zeros(sim.PARAM_COUNT)), [MEDIUM.start])
    w = np.random.default_rng(4).standard_normal(sim.PARAM_COUNT)
    np.testing.assert_allclose(sim.simulate(HARD, w[None, :])[0], sim.simulate_one_reference(HARD, w), atol=1e-6)


def test_simulate_rejects_bad_weights():
    with pytest.raises(ValueError, match="142"):
        sim.simulate(MEDIUM, np.zeros((2, 141)))
    bad = np.zeros((3, sim.PARAM_COUNT))
    bad[1, 5] = np.nan
    with pytest.raises(ValueError, match=r"\[1\]"):
        sim.simulate(MEDIUM, bad)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), scale=st.sampled_from([0.3, 1.0, 3.0, 10.0]), hard=st.booleans())
def test_robot_never_enters_or_crosses_a_wall(seed, scale, hard):
    maze = HARD if hard else MEDIUM
    weights = np.random.default_rng(seed).standard_normal((16, sim.PARAM_COUNT)) * scale
    traj = sim.simulate(maze, weights, steps=150, trajectory=True)  # (151, 16, 2)
    d = sim.wall_distances(maze.walls, traj.reshape(-1, 2))
    assert d.min() >= sim.RADIUS - 1e-9
    xmin, ymin, xmax, ymax = maze.bounds
    assert np.all((traj[..., 0] > xmin) & (traj[..., 0] < xmax) & (traj[..., 1] > ymin) & (traj[..., 1] < ymax))
    # a step moves at most MAX_SPEED, so a robot cannot jump through a wall
    steps = np.hypot(*np.diff(traj, axis=0).transpose(2, 0, 1))
    assert steps.max() <= sim.MAX_SPEED + 1e-9
    np.testing.assert_array_equal(traj[-1], sim.simulate(maze, weights, steps=150))


# --- evaluator --------------------------------------------------------------------------------


def _genome(seed: int, scale: float = 1.0) -> dict:
    return {"weights.npy": npy(np.random.default_rng(seed).standard_normal(sim.PARAM_COUNT) * scale)}


@pytest.mark.parametrize("map_name, maze", [("medium", MEDIUM), ("hard", HARD)])
def test_evaluate_batch_results(map_name, maze):
    genomes = [_genome(s) for s in range(5)]
    results = ev.evaluate_batch(genomes, {"map": map_name})
    assert len(results) == 5
    for g, r in zip(genomes, results, strict=True):
        assert r["valid"] is True
        assert set(r) == {"fitness", "descriptors", "metrics", "feedback", "valid"}
        x, y = r["descriptors"]
        w = np.load(io.BytesIO(g["weights.npy"]))
        rx, ry = sim.simulate_one_reference(maze, w)
        assert (x, y) == pytest.approx((rx, ry), abs=1e-6)
        d = math.hypot(rx - maze.goal[0], ry - maze.goal[1])
        assert r["fitness"] == pytest.approx(-d, abs=1e-6)
        # nothing restated: the fitness and descriptors say where it ended; a feedback only for a solver
        assert r["metrics"] == {}
        assert (r["feedback"] != "") == (d < 5)
        json.dumps(r)  # plain JSON types only


def test_evaluate_batch_invalid_genomes_do_not_break_the_batch():
    nan_w = np.zeros(sim.PARAM_COUNT)
    nan_w[7] = np.nan
    genomes = [
        _genome(1),
        {"weights.npy": npy(np.zeros(141))},
        {"weights.npy": npy(nan_w)},
        {"other.txt": b"x"},
        {"weights.npy": b"garbage"},
        {"weights.npy": npy(np.zeros((2, 71)))},
        {"weights.npy": npy(np.array([np.inf] * sim.PARAM_COUNT))},
        _genome(2),
    ]
    results = ev.evaluate_batch(genomes, {"map": "medium"})
    assert [r["valid"] for r in results] == [True, False, False, False, False, False, False, True]
    reasons = [r["feedback"] for r in results]
    assert "142" in reasons[1] and "(141,)" in reasons[1]
    assert "non-finite" in reasons[2] and "index 7" in reasons[2]
    assert "no weights.npy" in reasons[3]
    assert "loadable" in reasons[4]
    assert "(2, 71)" in reasons[5]
    assert "non-finite" in reasons[6]
    for r in results[1:7]:
        assert r["fitness"] is None and r["descriptors"] is None and r["metrics"] == {}
    alone = ev.evaluate_batch([genomes[0], genomes[7]], {"map": "medium"})
    assert [results[0], results[7]] == alone


def test_evaluate_batch_empty_and_all_invalid():
    assert ev.evaluate_batch([], {"map": "hard"}) == []
    assert ev.evaluate_batch([{}], {"map": "hard"})[0]["valid"] is False


# Controllers found offline by short MAP-Elites runs (Gaussian sigma 0.3, 29x13 (medium) / 19x19 (hard) grids of the
# final position; ~24k evaluations on medium, ~7k on hard). The test recomputes each final position
# with the scalar reference rather than trusting a recorded number.
SOLVER_MEDIUM = [
    -4.74955639731748, 0.5246626145726986, -0.43419759037629885, -1.2839779040440829,
    -1.9601564692021367, 1.5678765168354942, -0.15506455167232577, 0.24675291352635587,
    0.8253787105315007, 0.9171085670165047, 0.4098475371151754, 1.9569755763609546,
    -0.7797068888105219, -1.6497845497579688, 0.07983323899932945, 1.3990723414476642,
    0.33393685702463144, 0.9662989208238293, -0.4702294498835482, -3.4496590055973737,
    -0.12855124355062023, -1.4746986867541438, 1.1462517858612173, -0.5205493400761028,
    0.03037891473051446, -0.8549493532924921, -3.126371925916601, 1.444470899829,
    1.2053732610727146, -1.2986028047248426, 1.445040861632379, -0.246917394234409,
    2.520654116400253, 1.302647907621008, -0.812881642520829, 0.28263948576149905,
    1.2954380606380946, -0.5991417452521375, -1.2995879474007368, 0.7754877571200194,
    3.0322058178742415, -0.31681357270418264, -0.7525435213386378, 0.21623586243790474,
    -1.1943696191072881, -0.6878447693001802, -0.723463667667342, -1.6223100136627808,
    0.21685393624339278, -0.42670869005015916, 0.1880427566844703, -2.6551244943023433,
    -1.1320752762309851, -1.9406754668815949, 1.5882759570580738, -2.3046490382139426,
    0.9836308912799894, 0.42346042797267636, 1.0194074204241859, -0.6644614195181956,
    -0.29931457271064915, -2.380414292136245, 0.7302581676053124, -0.525640990998312,
    4.052377650354029, -0.6617537050071645, -3.1354465477954254, 1.5912415388241272,
    -0.6883648637692432, -2.4996036692038057, 0.6568091422423672, 0.33386184159932997,
    -0.6610640996922649, 0.2671583726608465, 1.2579452894255183, 1.9828836369156253,
    -1.4836391977281682, 2.8313056060912096, 1.93055382458052, -1.3827883339300742,
    -0.4677162642523768, -1.107423456831236, 0.3075212990040328, -1.1356310360884834,
    -1.2182657878788932, 0.988750667861436, -0.9646505411767526, 0.5615877652183207,
    0.7158699910799028, 2.124242127503095, -2.691450289056946, 0.6338124280434652,
    0.927427223696032, 3.4804840103591075, 1.5937664351089442, 1.0037736385738785,
    -1.7523432768942893, -1.0794070192274388, -1.1952682167510662, -0.09120383854090691,
    -1.8839029084106942, -0.7871646427227155, -2.7186474458810697, -1.7750529198911142,
    -0.09659843477810891, 4.062953640045198, 1.3658446454222766, -1.663802185922344,
    0.6963689298501492, 2.022688926314575, -2.190437495826384, -1.4975229182604968,
    1.205208872908947, -1.6585280687135482, -0.36470288678340246, -0.9290893035135641,
    -0.7770264003029497, 0.6345431238852304, -1.7083635483248967, 0.05741102577580007,
    -0.45100981609916435, -1.3705536846439745, -0.10649737629821282, 0.9226350111265833,
    0.5148959015119713, 1.177125902377574, 0.6121844339919378, 0.5260887326038309,
    -0.22975641529348012, -2.236762833527644, 0.3171080716799242, 0.9370639394036855,
    0.7354369864109787, -0.8435233574877232, 0.586006817045965, -1.0388609290052508,
    -2.2204275768349038, 3.2257894914798575, 0.5634758366456041, -0.360070614909137,
    4.210472444776441, 0.2506960162741283,
]


SOLVER_HARD = [
    0.6667196574981897, 0.29263683038794186, 1.7495528593916605, 0.6482164022363978,
    -0.07224847101493748, -0.12878651740697772, -0.842185649187131, -0.7179760663280272,
    -0.16494478645682678, -0.2520489085854549, 1.7482619664854773, -2.6363300291446783,
    -0.7715762003498474, 0.45567086733304013, -0.2301500592210209, -0.9368228439752637,
    -1.5605481406293638, 2.4315451889184136, 1.2739246379719555, -0.38933273393137263,
    0.24699282319208046, -0.776332561386951, -1.1550453037436557, 1.763299765786186,
    0.6440292502553877, 0.011395350879737809, -3.565991868140235, 1.9657877653818938,
    -0.95959245186005, -0.9352958495932822, 0.9093066587190296, 0.11907198750472252,
    -1.0413976256345245, 1.2545431065714392, -0.009226210400721885, 2.7407263265655963,
    -0.556811779118612, 0.38138399543523416, -1.0081089781801715, -1.6785148177935167,
    -0.6439017858594213, 0.8752826069968105, -0.5309838322982606, 0.7844835900911074,
    1.5551980201106153, -0.8705372698914406, -0.6745141623793787, 0.04604344037345179,
    -3.0589454688579494, 3.674810139362397, -0.790349153445862, 1.0990652067113134,
    0.5989533700378753, -0.08217580699594648, 0.9623444597366689, 1.652245237609985,
    1.0717866757734948, -1.1456378006257997, -0.3140714974749256, 0.6667323790028163,
    -0.07681773113521886, -1.6127902463799852, -0.6091587378452987, 1.612494358815447,
    0.12012691324663849, 0.6280448396371532, 0.855359216182356, -1.5515231774887948,
    -3.261301160527268, 0.8497765232600825, -1.556577698821393, -0.783368631916849,
    1.9626962930163536, -0.8952573796711127, -1.6870798370381581, 2.634804212834423,
    -0.9974473359600625, -0.27026373913033125, 0.2711675399677259, 1.562269689525974,
    1.1843034956806169, 0.0918280197913902, -0.6770736208659502, 0.5996954014686604,
    1.0293535271504026, -2.3044301948031327, 0.7250530591289922, -0.6203484497530933,
    -1.092544496245671, 0.6692937222914305, 1.8382298628783384, -1.3568096643039151,
    -2.279199241266286, -0.3756452002227398, -1.8587605444135682, -0.7749113150518293,
    -0.5010717598227015, 0.3245712072966934, 2.176126167158622, 0.8462792376372043,
    -0.4862119440347048, 0.01724906905532418, -1.4163423548973417, 1.7402172463945151,
    -0.6990791938880355, 1.533773905385761, -0.993825527009448, -0.04984300103279446,
    -0.2566214703094075, -0.05708456665526862, -1.5716004851525862, 1.5946596332983247,
    2.2691236660060032, 0.9705511762481445, 0.15535841322068272, 0.8330499750908877,
    0.17510193373253516, 1.5163302694745382, -0.23730718401414203, -1.0467565082964623,
    -0.43657518453862176, -1.6989968544960024, 1.2988912740957526, 0.14911833050700118,
    -0.12345214174515806, -0.821803489735223, 1.1260052674508554, 1.9036727629341226,
    1.9971089430918816, -0.85261529283465, -0.3357392454163981, -0.8241592154304909,
    0.38426917347368267, -1.864777010243853, 0.2609947230816236, 0.25870872858464533,
    0.6898546942803483, 1.8360423265693755, 1.127166096842667, -0.2016091080483337,
    -0.6101546909674809, 1.5082100753580403,
]


@pytest.mark.parametrize("map_name", ["medium", "hard"])
def test_a_controller_that_reaches_the_exit_is_solved(map_name):
    maze = {"medium": MEDIUM, "hard": HARD}[map_name]
    w = np.array({"medium": SOLVER_MEDIUM, "hard": SOLVER_HARD}[map_name], dtype=np.float64)
    x, y = sim.simulate_one_reference(maze, w)
    d = math.hypot(x - maze.goal[0], y - maze.goal[1])
    assert d < 5
    r = ev.evaluate_batch([{"weights.npy": npy(w)}], {"map": map_name})[0]
    assert r["valid"] and r["metrics"] == {}
    assert r["fitness"] == pytest.approx(-d, abs=1e-6) and r["fitness"] > -5
    assert r["feedback"] == f"solved: ended {d:.2f} from the exit"
    # the same controller does not solve the other map
    other = "hard" if map_name == "medium" else "medium"
    r = ev.evaluate_batch([{"weights.npy": npy(w)}], {"map": other})[0]
    assert r["fitness"] < -5 and r["feedback"] == ""


# --- CLI --------------------------------------------------------------------------------------


def test_cli_writes_results_for_agent_dirs(tmp_path):
    a, b, bad = tmp_path / "agent_a", tmp_path / "agent_b", tmp_path / "agent_bad"
    for folder, g in ((a, _genome(10)), (b, _genome(11)), (bad, {"weights.npy": npy(np.ones(3))})):
        folder.mkdir()
        (folder / "weights.npy").write_bytes(g["weights.npy"])
    (a / "notes.md").write_text("ignored")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    out = tmp_path / "out.json"
    proc = subprocess.run(
        [sys.executable, str(MAZE_DIR / "evaluate.py"), "--out", str(out), "--arg", "map=hard",
         str(a), str(b), str(bad)],
        cwd=elsewhere, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(out.read_text())
    assert len(results) == 3
    assert [r["valid"] for r in results] == [True, True, False]
    expected = ev.evaluate_batch([_genome(10), _genome(11)], {"map": "hard"})
    for got, want in zip(results[:2], expected, strict=True):
        assert got["descriptors"] == pytest.approx(want["descriptors"], abs=1e-9)
        assert got["fitness"] == pytest.approx(want["fitness"], abs=1e-9)
    assert "(3,)" in results[2]["feedback"]


def test_cli_seed_agent_on_medium(tmp_path):
    out = tmp_path / "o.json"
    proc = subprocess.run(
        [sys.executable, "evaluate.py", "--out", str(out), str(MAZE_DIR / "seed")],
        cwd=MAZE_DIR, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    (r,) = json.loads(out.read_text())
    assert r["valid"] and r["feedback"] == ""
    # the seed drives away from the start, but nowhere near the exit
    assert r["descriptors"] != [30.0, 22.0] and r["fitness"] < -50


# --- task.toml --------------------------------------------------------------------------------


def test_task_toml_matches_the_maps():
    spec = tomllib.loads((MAZE_DIR / "task.toml").read_text())
    assert spec["name"] == "maze" and spec["genome"] == "params" and spec["param_count"] == sim.PARAM_COUNT
    assert spec["fitness"]["target"] == -5.0 and spec["fitness"]["upper"] == 0.0
    assert spec["fitness"]["lower"] <= -max(MEDIUM.diagonal, HARD.diagonal)
    for variant, maze in (("medium", MEDIUM), ("hard", HARD)):
        v = spec["variants"][variant]
        assert v["evaluate_args"] == {"map": variant}
        (dx, dy) = v["descriptors"]
        xmin, ymin, xmax, ymax = maze.bounds
        assert (dx["name"], dx["lower"], dx["upper"]) == ("x", xmin, xmax)
        assert (dy["name"], dy["lower"], dy["upper"]) == ("y", ymin, ymax)
        assert v["fitness_lower"] <= -maze.diagonal
    seed = np.load(MAZE_DIR / "seed" / "weights.npy")
    assert seed.dtype == np.float64 and seed.shape == (sim.PARAM_COUNT,)


def _bench_maze():
    path = Path(__file__).resolve().parents[2] / "bench" / "maze.py"
    spec = importlib.util.spec_from_file_location("bench_maze", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("method", ["novelty", "map_elites_curiosity"])
def test_bench_inprocess_replay_is_the_engines_campaign_child_for_child(tmp_path, ray_address, method):
    """``bench/maze.py --inprocess`` stands for the engine: the same parents, fitness and descriptors
    for every child of a reproducible campaign (so its figures are the engine's)."""
    import sqlite3

    from openended.config import load_config
    from openended.engine import Campaign

    bench = _bench_maze()
    kind, strategy, params = bench.METHODS[method]
    db = tmp_path / "c.db"
    cfg = load_config(None, {
        "sandbox.kind": "inprocess", "task": "maze-medium", "db": str(db), "seed": 3, "budget.max_children": 200,
        "archive.kind": kind, "selection.strategy": strategy, "selection.params": params,
        "mutation.operator": "gaussian", "mutation.params": {"sigma": 0.3}, "ray_address": ray_address,
        "stats_every_seconds": 60.0, **bench.schedule(16),
    })
    Campaign(cfg).run()
    con = sqlite3.connect(db)
    rows = con.execute("SELECT id, parent_id, fitness, descriptors FROM agents ORDER BY id").fetchall()
    con.close()
    replayed = bench.replay("maze-medium", method, 3, 200, 0.3, 16)
    assert len(rows) == len(replayed) == 200
    assert [(r[0], r[1]) for r in rows] == [(c["id"], c["parent_id"]) for c in replayed]
    assert [r[2] for r in rows] == [c["fitness"] for c in replayed]
    assert [json.loads(r[3]) for r in rows] == [c["descriptors"] for c in replayed]
    assert len({c["parent_id"] for c in replayed}) > 5  # selection had a choice to get wrong


def test_bench_inprocess_lockstep_seeds_are_each_seed_alone():
    """``--inprocess`` runs every seed at once (one simulator call per round for all of them): each
    seed's campaign is still the one it gives alone, child for child."""
    bench = _bench_maze()
    seeds = [3, 0, 7]
    together = bench.replay_many("maze-hard", "novelty", seeds, 150, 0.3, 16)
    for seed, children in zip(seeds, together, strict=True):
        assert children == bench.replay("maze-hard", "novelty", seed, 150, 0.3, 16)
    assert bench.replay_many("maze-medium", "novelty", [5, 1], 40, 0.3, 64) == [
        bench.replay("maze-medium", "novelty", 5, 40, 0.3, 64), bench.replay("maze-medium", "novelty", 1, 40, 0.3, 64)]
