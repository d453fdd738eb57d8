import numpy as np


def pack(n: int) -> np.ndarray:
    """Place n circles in the unit square: one row [x, y, r] per circle.

    A grid: 6 columns of equal circles of radius 1/12, row after row. The radii are shrunk by a
    hair (1e-12) because touching circles can overlap by a rounding error, and overlap is invalid.
    """
    r = 1.0 / 12.0
    rows = []
    for i in range(n):
        col, row = i % 6, i // 6
        rows.append([(2 * col + 1) / 12.0, (2 * row + 1) / 12.0, r * (1 - 1e-12)])
    return np.array(rows)
