"""The archive kinds by name: ``make_archive`` for a new archive, ``restore_archive`` for a stored one.

The kinds are ``openended.names.ARCHIVE_KINDS``; each is implemented by the class that declares it
(``cells.py``: grid, cvt; ``novelty.py``: novelty, all).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from openended.names import ARCHIVE_KINDS, ArchiveKind
from openended.qd.archive import Archive, archive_class
from openended.qd.cells import CVTArchive, GridArchive
from openended.qd.novelty import AllArchive, NoveltyArchive
from openended.qd.space import SpaceLike

__all__ = ["ARCHIVE_KINDS", "ArchiveKind", "KIND_CLASSES", "archive_class", "make_archive", "restore_archive"]

#: The class of each archive kind.
KIND_CLASSES: Mapping[str, type[Archive]] = {
    "grid": GridArchive,
    "cvt": CVTArchive,
    "novelty": NoveltyArchive,
    "all": AllArchive,
}
if tuple(KIND_CLASSES) != ARCHIVE_KINDS or any(archive_class(k) is not c for k, c in KIND_CLASSES.items()):
    raise ImportError(f"archive classes {dict(KIND_CLASSES)} do not match the archive kinds {ARCHIVE_KINDS}")


def make_archive(kind: str, *, space: SpaceLike, fitness_offset: float, seed: int = 0, tolerance: float = 0.0,
                 noise: float = 0.0, **params: Any) -> Archive:
    """A new archive of ``kind`` (one of ARCHIVE_KINDS); ``seed`` drives the CVT sample; ``tolerance`` and
    ``noise``: how much fitter a child must be to replace an elite (:meth:`Archive.set_margin`).

    ValueError naming an unknown kind (and the valid ones) or unknown parameters.
    """
    cls = archive_class(kind)
    bad = sorted(p for p in params if p.startswith("_"))
    if bad:
        raise ValueError(f"unknown parameter(s) {bad} for archive kind {kind!r}")
    if cls.seeded:
        params["seed"] = seed
    archive = cls(space=space, fitness_offset=fitness_offset, **params)
    archive.set_margin(tolerance=tolerance, noise=noise)
    return archive


def restore_archive(*, schema: Mapping[str, Any], state: Mapping[str, Any],
                    elites: list[dict[str, Any]] | Mapping[str, Any]) -> Archive:
    """Rebuild an archive from its schema, state and elites; dispatches on ``schema['kind']``."""
    return Archive.restore(schema=schema, state=state, elites=elites)
