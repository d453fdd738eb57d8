import numpy as np

# Rows of circles: (how many, the row's height y, the margin left free at each side). A row's centres
# are spread evenly across the width between its margins, so any count makes a row that fits.
# The start is a grid of 6 columns: four full rows and a row of two.
ROWS = [
    (6, 1 / 12.0, 0.0),
    (6, 3 / 12.0, 0.0),
    (6, 5 / 12.0, 0.0),
    (6, 7 / 12.0, 0.0),
    (2, 9 / 12.0, 0.0),
]


def centres(n: int) -> np.ndarray:
    """The first n centres of ROWS, clipped into the unit square."""
    points = [(margin + (1 - 2 * margin) * (k + 0.5) / count, y) for count, y, margin in ROWS for k in range(count)]
    return np.clip(np.array(points[:n], dtype=float), 0, 1)


def largest_radii(xy: np.ndarray) -> np.ndarray:
    """Each circle in turn as large as the walls and the circles before it allow.

    The radii are shrunk by a hair at the end: touching circles can overlap by a rounding error,
    and any overlap is invalid.
    """
    r = np.zeros(len(xy))
    for i, (x, y) in enumerate(xy):
        room = min(x, y, 1 - x, 1 - y)
        if i:
            room = min(room, float((np.hypot(xy[:i, 0] - x, xy[:i, 1] - y) - r[:i]).min()))
        r[i] = max(room, 0)
    return r * (1 - 1e-12)


def pack(n: int) -> np.ndarray:
    """Place n circles in the unit square: one row [x, y, r] per circle."""
    xy = centres(n)
    return np.column_stack([xy, largest_radii(xy)])
