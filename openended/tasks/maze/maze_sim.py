"""Deceptive-maze simulator (Lehman & Stanley 2011), vectorised over controllers with numpy.

Stdlib + numpy only: this module runs inside the evaluation sandbox next to ``evaluate.py``.

The robot, as ``maps/README.md`` defines it:

* body radius 8; a move is cancelled for a step if the new centre would be closer than the
  radius to any wall segment;
* six rangefinders at -90, -45, 0, 45, 90, -180 degrees relative to the heading, range 100,
  each reading the distance to the nearest wall intersection along its ray (100 if none),
  fed to the controller divided by 100;
* four pie-slice radars for the goal's angle relative to the heading, covering
  [315, 405), [45, 135), [135, 225), [225, 315) degrees; the slice holding the goal reads 1;
* controller inputs: bias 1.0, 6 rangefinders, 4 radars; a fixed MLP 11 -> 10 (tanh) -> 2 (sigmoid);
* each step: ang_vel += out1 - 0.5, speed += out2 - 0.5, both clamped to [-3, 3]; the velocity
  is taken from the heading *before* the turn; heading += ang_vel (degrees, wrapped to [0, 360));
  position += velocity unless the new position collides; sensors are then updated at the new pose.

Genome layout (a flat float64 vector of ``PARAM_COUNT`` = 142 values)::

    W1 = w[0:110].reshape(11, 10)    # inputs x hidden
    b1 = w[110:120]
    W2 = w[120:140].reshape(10, 2)   # hidden x outputs
    b2 = w[140:142]
    hidden = tanh(x @ W1 + b1); out = sigmoid(hidden @ W2 + b2)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

N_INPUTS = 11
N_HIDDEN = 10
N_OUTPUTS = 2
PARAM_COUNT = N_INPUTS * N_HIDDEN + N_HIDDEN + N_HIDDEN * N_OUTPUTS + N_OUTPUTS  # 142

RADIUS = 8.0
RANGE = 100.0
STEPS = 400
MAX_SPEED = 3.0
MAX_ANG_VEL = 3.0
RANGEFINDER_ANGLES = (-90.0, -45.0, 0.0, 45.0, 90.0, -180.0)
RADAR_SLICES = ((315.0, 405.0), (45.0, 135.0), (135.0, 225.0), (225.0, 315.0))
SOLVED_DISTANCE = 5.0

MAPS_DIR = Path(__file__).resolve().parent / "maps"


@dataclass(frozen=True)
class Maze:
    """A parsed map.

    Attributes:
        walls: (N, 4) float64 array, one segment ``x1 y1 x2 y2`` per row (boundaries included).
        start: (2,) start position.
        heading: start heading in degrees (0 = +x axis, counter-clockwise positive).
        goal: (2,) exit position.
        bounds: ``(xmin, ymin, xmax, ymax)``, the min / max of the wall coordinates.
    """

    walls: np.ndarray
    start: np.ndarray
    heading: float
    goal: np.ndarray
    bounds: tuple[float, float, float, float]

    @property
    def diagonal(self) -> float:
        xmin, ymin, xmax, ymax = self.bounds
        return math.hypot(xmax - xmin, ymax - ymin)


def parse_maze(text: str, source: str = "<maze>") -> Maze:
    """Parse the map format of ``maps/README.md``: ``#`` comments and blank lines are ignored;
    then N, start ``x y``, heading, goal ``x y`` and N wall lines ``x1 y1 x2 y2``."""
    lines = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped and not stripped.startswith("#"):
            lines.append((lineno, stripped))

    def numbers(i: int, count: int, what: str) -> list[float]:
        if i >= len(lines):
            raise ValueError(f"{source}: unexpected end of file, expected {what}")
        lineno, line = lines[i]
        parts = line.split()
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise ValueError(f"{source}:{lineno}: expected {what}, got {line!r}") from None
        if len(values) != count or not all(math.isfinite(v) for v in values):
            raise ValueError(f"{source}:{lineno}: expected {what} ({count} finite numbers), got {line!r}")
        return values

    (n_float,) = numbers(0, 1, "the number of walls")
    n = int(n_float)
    if n != n_float or n < 1:
        raise ValueError(f"{source}:{lines[0][0]}: wall count must be a positive integer, got {lines[0][1]!r}")
    start = numbers(1, 2, "start position 'x y'")
    (heading,) = numbers(2, 1, "start heading in degrees")
    goal = numbers(3, 2, "goal position 'x y'")
    walls = [numbers(4 + k, 4, f"wall {k + 1} of {n} 'x1 y1 x2 y2'") for k in range(n)]
    if len(lines) > 4 + n:
        lineno, line = lines[4 + n]
        raise ValueError(f"{source}:{lineno}: {n} walls declared but more lines follow: {line!r}")
    w = np.array(walls, dtype=np.float64)
    xs = np.concatenate([w[:, 0], w[:, 2]])
    ys = np.concatenate([w[:, 1], w[:, 3]])
    bounds = (float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max()))
    return Maze(
        walls=w,
        start=np.array(start, dtype=np.float64),
        heading=float(heading) % 360.0,
        goal=np.array(goal, dtype=np.float64),
        bounds=bounds,
    )


def load_maze(name_or_path: str | Path) -> Maze:
    """Load a built-in map by name (``"medium"``, ``"hard"``) or any map file by path."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = MAPS_DIR / f"{name_or_path}.txt"
        if not path.exists():
            known = sorted(p.stem for p in MAPS_DIR.glob("*.txt"))
            raise ValueError(f"unknown maze {str(name_or_path)!r}; built-in maps: {', '.join(known)}")
    return parse_maze(path.read_text(), source=str(path))


# ---------------------------------------------------------------------------------------------
# Vectorised sensors and controller (n robots at once; walls and rays broadcast).
# ---------------------------------------------------------------------------------------------

_RF_OFFSETS = np.deg2rad(np.array(RANGEFINDER_ANGLES))
_EYE4 = np.eye(4)


def wall_distances(walls: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Distance from each position (n, 2) to each wall segment (W, 4): returns (n, W)."""
    ax, ay = walls[:, 0], walls[:, 1]
    sx, sy = walls[:, 2] - ax, walls[:, 3] - ay
    len2 = sx * sx + sy * sy
    len2[len2 == 0] = 1.0  # a zero-length wall is a point: s == 0 makes t == 0 below
    px = pos[:, 0:1] - ax  # (n, W)
    py = pos[:, 1:2] - ay
    t = np.clip((px * sx + py * sy) / len2, 0.0, 1.0)
    dx = px - t * sx
    dy = py - t * sy
    return np.sqrt(dx * dx + dy * dy)


class _RayCaster:
    """Rangefinder ray casting for n robots against fixed walls, with preallocated (n, 6, W) buffers.

    A ray from P along r (length RANGE) hits wall A + u*s at P + t*r when both t and u lie in
    [0, 1]; t = cross(A - P, s) / cross(r, s), u = cross(A - P, r) / cross(r, s). Parallel walls
    (cross(r, s) == 0) give inf/nan for u and so never count as hits. A reading is
    min(t over hits, 1) * RANGE, i.e. RANGE when nothing is within range.
    """

    def __init__(self, walls: np.ndarray, n: int):
        self.ax, self.ay = walls[:, 0].copy(), walls[:, 1].copy()
        self.sx, self.sy = walls[:, 2] - self.ax, walls[:, 3] - self.ay
        shape = (n, len(RANGEFINDER_ANGLES), walls.shape[0])
        self.denom, self.t, self.u, self.tmp = (np.empty(shape) for _ in range(4))
        self.hit, self.tmp_b = np.empty(shape, dtype=bool), np.empty(shape, dtype=bool)

    def __call__(self, pos: np.ndarray, heading: np.ndarray) -> np.ndarray:
        ang = np.deg2rad(heading)[:, None] + _RF_OFFSETS  # (n, 6)
        rx = (np.cos(ang) * RANGE)[:, :, None]  # ray vector, (n, 6, 1)
        ry = (np.sin(ang) * RANGE)[:, :, None]
        qx = (self.ax - pos[:, 0:1])[:, None, :]  # A - P, (n, 1, W)
        qy = (self.ay - pos[:, 1:2])[:, None, :]
        denom, t, u, tmp, hit, tmp_b = self.denom, self.t, self.u, self.tmp, self.hit, self.tmp_b
        with np.errstate(invalid="ignore", divide="ignore"):
            np.multiply(rx, self.sy, out=denom)
            np.multiply(ry, self.sx, out=tmp)
            denom -= tmp
            t_num = qx * self.sy
            t_num -= qy * self.sx  # (n, 1, W): the same for every ray
            np.divide(t_num, denom, out=t)
            np.multiply(qx, ry, out=u)
            np.multiply(qy, rx, out=tmp)
            u -= tmp
            u /= denom
        np.greater_equal(u, 0.0, out=hit)
        np.less_equal(u, 1.0, out=tmp_b)
        hit &= tmp_b
        np.greater_equal(t, 0.0, out=tmp_b)
        hit &= tmp_b
        np.invert(hit, out=hit)
        np.copyto(t, 1.0, where=hit)
        return np.minimum(t.min(axis=2), 1.0) * RANGE


def rangefinders(walls: np.ndarray, pos: np.ndarray, heading: np.ndarray) -> np.ndarray:
    """Rangefinder readings (n, 6) in world units (0..RANGE) for positions (n, 2), headings (n,) in degrees."""
    return _RayCaster(walls, pos.shape[0])(pos, heading)


def radars(goal: np.ndarray, pos: np.ndarray, heading: np.ndarray) -> np.ndarray:
    """Pie-slice radar readings (n, 4): 1 in the slice holding the goal's angle relative to the heading."""
    ang = np.rad2deg(np.arctan2(goal[1] - pos[:, 1], goal[0] - pos[:, 0]))
    rel = (ang - heading) % 360.0
    idx = (((rel + 45.0) % 360.0) // 90.0).astype(np.intp) % 4
    return _EYE4[idx]


def split_weights(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split (n, 142) genomes into W1 (n, 11, 10), b1 (n, 10), W2 (n, 10, 2), b2 (n, 2)."""
    n = weights.shape[0]
    i = N_INPUTS * N_HIDDEN
    j = i + N_HIDDEN
    k = j + N_HIDDEN * N_OUTPUTS
    return (
        weights[:, :i].reshape(n, N_INPUTS, N_HIDDEN),
        weights[:, i:j],
        weights[:, j:k].reshape(n, N_HIDDEN, N_OUTPUTS),
        weights[:, k:],
    )


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -500.0, 500.0)))


def _check_weights(weights: np.ndarray) -> np.ndarray:
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim == 1:
        weights = weights[None, :]
    if weights.ndim != 2 or weights.shape[1] != PARAM_COUNT:
        raise ValueError(f"weights must have shape (n, {PARAM_COUNT}), got {weights.shape}")
    if not np.all(np.isfinite(weights)):
        bad = np.flatnonzero(~np.all(np.isfinite(weights), axis=1))
        raise ValueError(f"weights rows {bad.tolist()} hold non-finite values")
    return weights


def simulate(maze: Maze, weights: np.ndarray, steps: int = STEPS, *, trajectory: bool = False) -> np.ndarray:
    """Run n controllers in ``maze`` for ``steps`` steps, all at once.

    Args:
        maze: the map.
        weights: (n, PARAM_COUNT) float64 genomes, all finite (ValueError otherwise).
        steps: number of time steps (400 in the original domain).
        trajectory: if True return the (steps + 1, n, 2) positions, start included.

    Returns:
        (n, 2) final positions (or the trajectory, see above). The only Python loop is over steps.
    """
    weights = _check_weights(weights)
    n = weights.shape[0]
    W1, b1, W2, b2 = split_weights(weights)
    walls = maze.walls
    pos = np.tile(maze.start, (n, 1))
    heading = np.full(n, maze.heading)
    speed = np.zeros(n)
    ang_vel = np.zeros(n)
    x = np.empty((n, N_INPUTS))
    x[:, 0] = 1.0
    traj = [pos.copy()] if trajectory else None

    cast = _RayCaster(walls, n)

    def sense() -> None:
        x[:, 1:7] = cast(pos, heading) / RANGE
        x[:, 7:11] = radars(maze.goal, pos, heading)

    sense()
    for _ in range(steps):
        hidden = np.tanh(np.matmul(x[:, None, :], W1)[:, 0, :] + b1)
        out = _sigmoid(np.matmul(hidden[:, None, :], W2)[:, 0, :] + b2)
        ang_vel = np.clip(ang_vel + (out[:, 0] - 0.5), -MAX_ANG_VEL, MAX_ANG_VEL)
        speed = np.clip(speed + (out[:, 1] - 0.5), -MAX_SPEED, MAX_SPEED)
        rad = np.deg2rad(heading)
        vx = speed * np.cos(rad)
        vy = speed * np.sin(rad)
        heading = (heading + ang_vel) % 360.0
        new = np.stack([pos[:, 0] + vx, pos[:, 1] + vy], axis=1)
        ok = ~np.any(wall_distances(walls, new) < RADIUS, axis=1)
        pos = np.where(ok[:, None], new, pos)
        sense()
        if traj is not None:
            traj.append(pos.copy())
    return np.stack(traj) if traj is not None else pos


# ---------------------------------------------------------------------------------------------
# Scalar reference implementation: plain loops, used only by tests to check ``simulate``.
# ---------------------------------------------------------------------------------------------


def _ref_point_segment(px: float, py: float, wall) -> float:
    ax, ay, bx, by = (float(v) for v in wall)
    sx, sy = bx - ax, by - ay
    len2 = sx * sx + sy * sy
    qx, qy = px - ax, py - ay
    t = (qx * sx + qy * sy) / len2 if len2 > 0 else 0.0
    t = min(max(t, 0.0), 1.0)
    dx, dy = qx - t * sx, qy - t * sy
    return math.sqrt(dx * dx + dy * dy)


def _ref_rangefinder(walls, px: float, py: float, angle_deg: float) -> float:
    rad = math.radians(angle_deg)
    rx, ry = math.cos(rad) * RANGE, math.sin(rad) * RANGE
    best = RANGE
    for wall in walls:
        ax, ay, bx, by = (float(v) for v in wall)
        sx, sy = bx - ax, by - ay
        denom = rx * sy - ry * sx
        if denom == 0:
            continue
        qx, qy = ax - px, ay - py
        t = (qx * sy - qy * sx) / denom
        u = (qx * ry - qy * rx) / denom
        if 0 <= t <= 1 and 0 <= u <= 1:
            best = min(best, t * RANGE)
    return best


def _ref_radar(goal, px: float, py: float, heading: float) -> list[float]:
    ang = math.degrees(math.atan2(float(goal[1]) - py, float(goal[0]) - px))
    rel = (ang - heading) % 360.0
    out = []
    for lo, hi in RADAR_SLICES:
        inside = lo <= rel < hi or lo <= rel + 360.0 < hi
        out.append(1.0 if inside else 0.0)
    return out


def simulate_one_reference(maze: Maze, weights_1d, steps: int = STEPS) -> tuple[float, float]:
    """Plain, loop-by-loop simulation of one controller; returns its final (x, y)."""
    w = [float(v) for v in weights_1d]
    if len(w) != PARAM_COUNT:
        raise ValueError(f"expected {PARAM_COUNT} weights, got {len(w)}")
    i = N_INPUTS * N_HIDDEN
    j = i + N_HIDDEN
    k = j + N_HIDDEN * N_OUTPUTS
    px, py = float(maze.start[0]), float(maze.start[1])
    heading = float(maze.heading)
    speed = ang_vel = 0.0

    def sense() -> list[float]:
        rf = [_ref_rangefinder(maze.walls, px, py, heading + a) / RANGE for a in RANGEFINDER_ANGLES]
        return [1.0] + rf + _ref_radar(maze.goal, px, py, heading)

    inputs = sense()
    for _ in range(steps):
        hidden = []
        for h in range(N_HIDDEN):
            z = 0.0
            for a in range(N_INPUTS):
                z += inputs[a] * w[a * N_HIDDEN + h]
            hidden.append(math.tanh(z + w[i + h]))
        outs = []
        for o in range(N_OUTPUTS):
            z = 0.0
            for h in range(N_HIDDEN):
                z += hidden[h] * w[j + h * N_OUTPUTS + o]
            z = min(max(z + w[k + o], -500.0), 500.0)
            outs.append(1.0 / (1.0 + math.exp(-z)))
        ang_vel = min(max(ang_vel + (outs[0] - 0.5), -MAX_ANG_VEL), MAX_ANG_VEL)
        speed = min(max(speed + (outs[1] - 0.5), -MAX_SPEED), MAX_SPEED)
        rad = math.radians(heading)
        vx, vy = speed * math.cos(rad), speed * math.sin(rad)
        heading = (heading + ang_vel) % 360.0
        nx, ny = px + vx, py + vy
        if all(_ref_point_segment(nx, ny, wall) >= RADIUS for wall in maze.walls):
            px, py = nx, ny
        inputs = sense()
    return px, py
