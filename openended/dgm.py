"""The Darwin Gödel Machine's comparison configurations, as named sets of campaign settings
(``openended run --dgm NAME``; flags given beside it win).

``full``
    the DGM: ``score_child`` selection over an archive that keeps every agent, children made by
    ``self_improve`` (the parent agent edits its own code).
``no_selfimprove``
    the same, but a fixed meta-agent (the seed agent) makes every change to the parent's files, so getting
    better at the task never makes the editor better (``self_improve`` with ``editor = "seed"``).
``no_darwin``
    no open-ended archive: always extend the latest agent (``latest`` selection).
``clade``
    the Huxley–Gödel Machine's choice of parent: Thompson sampling on the successes of each agent's whole
    subtree (``clade`` selection), with ``self_improve``.
"""

from __future__ import annotations

from typing import Any

from openended.names import SELF_IMPROVE

_EVERY_AGENT = {"archive.kind": "all", "mutation.operator": SELF_IMPROVE}

DGM_CONFIGURATIONS: dict[str, dict[str, Any]] = {
    "full": {**_EVERY_AGENT, "selection.strategy": "score_child"},
    "no_selfimprove": {**_EVERY_AGENT, "selection.strategy": "score_child", "mutation.params.editor": "seed"},
    "no_darwin": {**_EVERY_AGENT, "selection.strategy": "latest"},
    "clade": {**_EVERY_AGENT, "selection.strategy": "clade"},
}


def dgm_overrides(name: str) -> dict[str, Any]:
    """The dotted-key settings of configuration ``name``; ValueError naming the valid ones."""
    if name not in DGM_CONFIGURATIONS:
        raise ValueError(f"unknown DGM configuration {name!r}; valid: {', '.join(DGM_CONFIGURATIONS)}")
    return dict(DGM_CONFIGURATIONS[name])
