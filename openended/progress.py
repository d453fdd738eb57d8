"""Progress of a running campaign: a rich live panel on a terminal, plain log lines otherwise."""

from __future__ import annotations

import math
import sys
import time

from rich.console import Console
from rich.live import Live
from rich.table import Table

from openended.standing import Standing


def _fmt(value, spec: str = ".4g") -> str:
    return "n/a" if value is None else format(value, spec)


#: An ETA past this is no estimate worth printing (a model-driven campaign with a 100,000-children
#: budget, say, that will stop on its token budget or its target long before): it prints as unknown.
MAX_ETA_SECONDS = 30 * 24 * 3600.0


def eta_text(seconds: float | None) -> str:
    """An ETA as people read it: ``?`` when unknown or absurd, else ``42s``, ``12m 05s`` or ``3h 12m``."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0 or seconds > MAX_ETA_SECONDS:
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    minutes = round(seconds / 60)
    return f"{minutes // 60}h {minutes % 60:02d}m"


class Progress:
    """Receives snapshots from the campaign (``update``) and notes (``note``), and shows them."""

    def __init__(self, *, title: str, live: bool | None = None, log_every_seconds: float = 5.0):
        self.title = title
        self.live = sys.stdout.isatty() if live is None else live
        self.console = Console()
        self._live: Live | None = None
        self._last_log = 0.0
        self._last: tuple[float, int] | None = None  # (time, children finished) at the last update
        self._first: tuple[float, int] | None = None  # (time, children finished) at the first update
        self._rate = 0.0
        self.log_every_seconds = log_every_seconds
        self._started = time.monotonic()

    def __enter__(self):
        if self.live:
            self._live = Live(self._table({}), console=self.console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc):
        if self._live is not None:
            self._live.__exit__(*exc)
            self._live = None

    def note(self, message: str) -> None:
        self.console.print(message) if self.live else print(message, flush=True)

    def update(self, standing: Standing) -> None:
        now = time.monotonic()
        snap = standing.as_dict()
        finished = snap["children_done"] + snap["children_failed"]
        # The rate starts at the first update (the loop's start), so Ray's start-up does not count.
        if self._last is not None and now > self._last[0]:
            rate = (finished - self._last[1]) / (now - self._last[0])
            self._rate = rate if self._rate == 0.0 else 0.7 * self._rate + 0.3 * rate
        self._last = (now, finished)
        if self._first is None:
            self._first = (now, finished)
        snap = {**snap, "rate": self._rate, "eta": self._eta(snap, finished)}
        if self._live is not None:
            self._live.update(self._table(snap))
        elif now - self._last_log >= self.log_every_seconds:
            self._last_log = now
            print(self._line(snap), flush=True)

    def _eta(self, snap: dict, finished: int) -> float | None:
        """Seconds to the children budget at this session's mean rate; None until a child has finished.
        (Not the smoothed rate shown: it decays towards 0 while no child finishes, as between a
        model-driven campaign's slow children, and the ETA with it towards the absurd.)"""
        limit = snap.get("max_children")
        if not limit or self._first is None or self._last is None:
            return None
        seconds, done = self._last[0] - self._first[0], self._last[1] - self._first[1]
        if seconds <= 0 or done <= 0:
            return None
        return max(0.0, (limit - finished) * seconds / done)

    def _line(self, s: dict) -> str:
        return (
            f"[{self.title}] done {s['children_done']} failed {s['children_failed']} "
            f"in-flight {s['children_in_flight']} "
            f"| {s['rate']:.1f}/s | archive {s['archive_size']} coverage {s['coverage']:.1%} "
            f"QD {_fmt(s['qd_score'])} best {_fmt(s['best_fitness'])} | ETA {eta_text(s['eta'])}"
        )

    def _table(self, s: dict) -> Table:
        table = Table(title=self.title, show_header=False, expand=False)
        table.add_column(style="bold")
        table.add_column(justify="right")
        if not s:
            table.add_row("starting", "…")
            return table
        budget = s.get("max_children")
        table.add_row("done / failed / in flight",
                      f"{s['children_done']} / {s['children_failed']} / {s['children_in_flight']}")
        table.add_row("proposed / budget", f"{s['children_proposed']} / {budget if budget else '∞'}")
        table.add_row("children per second", f"{s['rate']:.1f}")
        table.add_row("archive size", str(s["archive_size"]))
        table.add_row("coverage", f"{s['coverage']:.1%}")
        table.add_row("QD score", _fmt(s["qd_score"]))
        table.add_row("best fitness", _fmt(s["best_fitness"]))
        table.add_row("elapsed", f"{s['elapsed_seconds']:.0f}s")
        table.add_row("ETA (budget)", eta_text(s["eta"]))
        return table
