"""Where a campaign stands: one shape for the progress display, the stats rows and the final summary."""

from __future__ import annotations

from dataclasses import asdict, dataclass


def show_number(value: float) -> str:
    """A number as summaries print it: 4 significant digits, and never "-0" (a perfect -0.0 distance)."""
    return f"{value + 0.0:.4g}"


@dataclass(frozen=True, slots=True)
class Standing:
    """The campaign's numbers at one moment."""

    children_done: int
    children_failed: int
    children_in_flight: int
    children_proposed: int
    max_children: int | None
    archive_size: int
    coverage: float
    qd_score: float
    best_fitness: float | None
    mean_fitness: float | None
    elapsed_seconds: float

    def stats_row(self) -> dict[str, float | int | None]:
        """The columns of a row of the store's ``stats`` table."""
        return {k: getattr(self, k) for k in ("children_done", "children_failed", "children_in_flight", "archive_size",
                                              "coverage", "qd_score", "best_fitness", "mean_fitness")}

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Summary(Standing):
    """Where a campaign session ended."""

    db_path: str
    status: str
    stop_reason: str
    children_pending: int
    seconds: float  # this session's wall time
    sandbox: str = ""  # the sandbox this session evaluated in (openended.sandbox.describe)

    def line(self) -> str:
        best = "n/a" if self.best_fitness is None else show_number(self.best_fitness)
        return (
            f"{self.status} ({self.stop_reason}): {self.children_done} done, {self.children_failed} failed, "
            f"{self.children_pending} left for resume, archive {self.archive_size}, coverage {self.coverage:.1%}, "
            f"QD score {show_number(self.qd_score)}, best fitness {best}, {self.seconds:.1f}s"
            f"{', sandbox ' + self.sandbox if self.sandbox else ''} -> {self.db_path}"
        )
