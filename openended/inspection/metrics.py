"""Whole-campaign numbers: progress replayed from the agents, the archive as a heatmap, operator
and model success rates, and campaigns compared side by side."""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from archive_db import ArchiveDB
from openended.inspection.access import InspectionError, open_db, run_of, snapshot
from openended.qd.measure import measurement_bins, measurement_cells, measurement_edges, measurement_stats, schema_space

__all__ = ["Heatmap", "progress_curve", "heatmap", "success_rates", "campaign_metrics", "compare"]


def _schema(run: Mapping[str, Any]) -> Mapping[str, Any]:
    """The run's archive schema, checked to hold a descriptor space."""
    schema = run["descriptor_schema"] or {}
    try:
        schema_space(schema)
    except (ValueError, TypeError, KeyError) as exc:
        raise InspectionError(f"the run's descriptor_schema has no usable descriptor space ({exc}); "
                              "was this database written by a campaign?") from None
    return schema


def progress_curve(db: ArchiveDB) -> dict:
    """QD score, coverage and best fitness after each finished child, replayed from the agents.

    ``evaluations`` counts finished children (archived, rejected or failed) in the order they
    finished. Coverage and QD score are measured as the archive measures them
    (:func:`openended.qd.measurement_stats`): on the measurement grid (the centroids for ``cvt``),
    QD score = sum over occupied cells of (best archived fitness - fitness_offset). Lists of equal
    length, one entry per finished child.
    """
    with snapshot(db):
        run = run_of(db)
        rows = db.conn.execute(
            "SELECT status, fitness, descriptors FROM agents WHERE finish_seq IS NOT NULL ORDER BY finish_seq"
        ).fetchall()
    schema = _schema(run)
    stats = measurement_stats(schema)
    n = len(rows)
    fitness = np.array([np.nan if r[1] is None else r[1] for r in rows], dtype=np.float64)
    best = np.fmax.accumulate(np.where(np.isnan(fitness), -np.inf, fitness)) if n else np.zeros(0)
    archived = [i for i, r in enumerate(rows) if r[0] == "archived"]
    descriptors = json.loads("[" + ",".join(rows[i][2] for i in archived) + "]")
    cell_of = dict(zip(archived, measurement_cells(schema, descriptors).tolist(), strict=True))
    qd_curve, cov_curve = [0.0] * n, [0.0] * n
    qd = coverage = 0.0
    for i in range(n):  # the archive's own running statistics, one update per archived child
        if i in cell_of:
            stats.measure(cell_of[i], float(fitness[i]))
            qd, coverage = stats.qd_score, stats.coverage
        qd_curve[i], cov_curve[i] = qd, coverage
    return {
        "kind": schema.get("kind"),
        "cells": stats.n_cells,
        "evaluations": list(range(1, n + 1)),
        "best_fitness": [None if not math.isfinite(b) else float(b) for b in best],
        "coverage": cov_curve,
        "qd_score": qd_curve,
    }


@dataclass(frozen=True)
class Heatmap:
    """The archive on a 2-D grid: ``values`` (ny, nx) holds the best elite fitness per cell, NaN
    where no elite falls; ``x_edges`` (nx+1,), ``y_edges`` (ny+1,); ``elites`` is how many elites
    were binned and ``occupied`` how many cells they fill; ``dims`` the descriptor indices on the x
    (and y) axis out of ``n_descriptors``."""

    values: np.ndarray
    x_edges: np.ndarray
    y_edges: np.ndarray
    x_name: str
    y_name: str
    elites: int
    occupied: int
    dims: tuple[int, ...]
    n_descriptors: int


def heatmap(db: ArchiveDB, dims: Sequence[int] = (0, 1)) -> Heatmap:
    """Bin every elite's descriptors onto the task's descriptor grid (``runs.descriptor_schema``).

    With more than two descriptors the grid is projected onto ``dims`` (each cell keeps the best
    fitness over the other descriptors); with one descriptor the map is a single row.
    """
    with snapshot(db):
        run = run_of(db)
        elites = db.elites()
    schema = _schema(run)
    names = schema_space(schema).names
    edges = measurement_edges(schema)
    d = len(edges)
    dims = tuple(int(i) for i in dims)[: min(2, d)]
    if len(set(dims)) != len(dims) or any(not 0 <= i < d for i in dims):
        raise InspectionError(f"heatmap dims {list(dims)} must be distinct descriptor indices in 0..{d - 1} "
                              f"({', '.join(names)})")
    fit = np.asarray([e["fitness"] for e in elites], dtype=np.float64)
    bins = measurement_bins(schema, [e["descriptors"] for e in elites])
    x_edges = edges[dims[0]]
    y_edges = edges[dims[1]] if len(dims) == 2 else np.array([0.0, 1.0])
    values = np.full((len(y_edges) - 1, len(x_edges) - 1), np.nan)
    for b, f in zip(bins, fit, strict=True):
        yx = (b[dims[1]] if len(dims) == 2 else 0, b[dims[0]])
        if not f <= values[yx]:  # NaN (empty) or a better elite
            values[yx] = f
    return Heatmap(values=values, x_edges=x_edges, y_edges=y_edges, x_name=names[dims[0]],
                   y_name=names[dims[1]] if len(dims) == 2 else "", elites=len(elites),
                   occupied=int(np.isfinite(values).sum()), dims=dims, n_descriptors=d)


def success_rates(db: ArchiveDB) -> dict:
    """How each operator and each model fared: ``{"operator": [...], "model": [...]}``, each row
    ``{"name", "children", "finished", "archived", "failed", "success_rate"}`` where success_rate =
    archived / finished among non-root children (None while none finished); NULL model is "none"."""
    rows = db.named_query("operator_success")
    out = {}
    for key in ("operator", "model"):
        agg: dict[str, Counter] = {}
        for r in rows:
            agg.setdefault(r[key], Counter()).update(
                {c: r[c] for c in ("children", "finished", "archived", "failed")})
        out[key] = [
            {"name": name, **{c: int(v[c]) for c in ("children", "finished", "archived", "failed")},
             "success_rate": (v["archived"] / v["finished"]) if v["finished"] else None}
            for name, v in sorted(agg.items())
        ]
    return out


def _default_threshold(run: Mapping[str, Any]) -> float | None:
    target = ((run.get("config") or {}).get("budget") or {}).get("target_fitness")
    if target is not None:
        return float(target)
    try:
        from openended.tasks import load_task

        return load_task(run["task"]).fitness_target
    except Exception:  # a user task folder that moved: no default threshold
        return None


def campaign_metrics(db: ArchiveDB, threshold: float | None = None) -> dict:
    """Final QD score, coverage and best fitness of one campaign, and how many evaluations it took
    for the best fitness to reach ``threshold`` (default: the campaign's target fitness, else the
    task's ``[fitness] target``; None when never reached or no threshold is known)."""
    with snapshot(db):
        run = run_of(db)
        curve = progress_curve(db)
        best = db.best_agent()
    if threshold is None:
        threshold = _default_threshold(run)
    reached = None
    if threshold is not None:
        for e, b in zip(curve["evaluations"], curve["best_fitness"], strict=True):
            if b is not None and b >= threshold:
                reached = e
                break
    n = len(curve["evaluations"])
    return {
        "db": str(db.path),
        "task": run["task"],
        "archive": run["descriptor_schema"].get("kind"),
        "seed": run["seed"],
        "evaluations": n,
        "qd_score": curve["qd_score"][-1] if n else 0.0,
        "coverage": curve["coverage"][-1] if n else 0.0,
        "best_fitness": None if best is None else best["fitness"],
        "best_agent": None if best is None else best["id"],
        "threshold": threshold,
        "evaluations_to_threshold": reached,
    }


def compare(paths: Sequence[str | os.PathLike[str]], threshold: float | None = None) -> list[dict]:
    """:func:`campaign_metrics` of each database, in the order given."""
    if not paths:
        raise InspectionError("compare: give at least one database")
    out = []
    for p in paths:
        with open_db(p) as db:
            out.append(campaign_metrics(db, threshold))
    return out
