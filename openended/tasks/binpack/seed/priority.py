import numpy as np


def priority(item: float, bins: np.ndarray) -> np.ndarray:
    """Score every bin that can take the item; the item goes to the highest score.

    Best fit: prefer the bin that the item leaves with the least room.
    """
    return -(bins - item)
