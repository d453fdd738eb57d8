"""Quality-diversity archives: MAP-Elites grid, CVT, novelty search and the keep-everything archive.

Four kinds (``openended.names.ARCHIVE_KINDS``) share one store, :class:`Archive`:

``grid``
    MAP-Elites: ``bins[i]`` equal bins per descriptor; a child enters an empty cell or replaces a
    strictly less fit elite (``cells.py``).
``cvt``
    CVT-MAP-Elites: cells are k-means centroids of a seeded uniform sample (``cells.py``).
``novelty``
    Novelty search with an adaptive threshold; every member is its own cell (``novelty.py``).
``all``
    Darwin Gödel Machine: every valid child is admitted as its own cell (``novelty.py``).

Novelty of a descriptor is the mean Euclidean distance (in descriptor units) to its ``k`` nearest
archive members (fewer when the archive is smaller); an empty archive gives 0.
It is exact and independent of the index's history, so a restored archive gives bit-identical
novelty (``members.py``).

Statistics are measured on the space's measurement grid (its bins) for ``grid``, ``novelty`` and
``all``, and on the centroids for ``cvt``: coverage = occupied cells / cells; QD score = sum over
occupied cells of (best fitness in the cell - fitness_offset), with exact integer accumulators, so
``stats()`` is O(1) and independent of insertion order (``stats.py``). ``measure.py`` gives the same
measurements from a stored schema alone.

Rooms: ``space.py`` (descriptor space, measurement grid), ``members.py`` (member storage, k-NN
novelty index), ``stats.py`` (QD statistics), ``archive.py`` (the :class:`Archive` that composes
them), ``cells.py`` and ``novelty.py`` (the kinds), ``registry.py`` (kinds by name), ``measure.py``.
"""

from __future__ import annotations

from openended.names import ARCHIVE_KINDS
from openended.qd.archive import AddResult, Archive
from openended.qd.cells import CVTArchive, GridArchive
from openended.qd.measure import (
    measurement_bins,
    measurement_cells,
    measurement_edges,
    measurement_stats,
    qd_score,
    qd_stats,
    schema_space,
)
from openended.qd.novelty import AllArchive, NoveltyArchive
from openended.qd.registry import make_archive, restore_archive
from openended.qd.space import MAX_GRID_CELLS, DescriptorSpace
from openended.qd.stats import QDStats

__all__ = [
    "ARCHIVE_KINDS",
    "MAX_GRID_CELLS",
    "AddResult",
    "AllArchive",
    "Archive",
    "CVTArchive",
    "DescriptorSpace",
    "GridArchive",
    "NoveltyArchive",
    "QDStats",
    "make_archive",
    "measurement_bins",
    "measurement_cells",
    "measurement_edges",
    "measurement_stats",
    "qd_score",
    "qd_stats",
    "restore_archive",
    "schema_space",
]
