"""Progress of a running campaign: a rich live panel on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.live import Live
from rich.table import Table

from openended.standing import Standing


def _fmt(value, spec: str = ".4g") -> str:
    return "n/a" if value is None else format(value, spec)


def _seconds(value) -> str:
    return "n/a" if value is None else f"{value:.0f}s"


class Progress:
    """Receives snapshots from the campaign (``update``) and notes (``note``), and shows them."""

    def __init__(self, *, title: str, live: bool | None = None, log_every_seconds: float = 5.0):
        self.title = title
        self.live = sys.stdout.isatty() if live is None else live
        self.console = Console()
        self._live: Live | None = None
        self._last_log = 0.0
        self._last: tuple[float, int] | None = None  # (time, children finished) at the last update
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
        snap = {**snap, "rate": self._rate, "eta": self._eta(snap, finished)}
        if self._live is not None:
            self._live.update(self._table(snap))
        elif now - self._last_log >= self.log_every_seconds:
            self._last_log = now
            print(self._line(snap), flush=True)

    def _eta(self, snap: dict, finished: int) -> float | None:
        limit = snap.get("max_children")
        if not limit or self._rate <= 0:
            return None
        return max(0.0, (limit - finished) / self._rate)

    def _line(self, s: dict) -> str:
        return (
            f"[{self.title}] done {s['children_done']} failed {s['children_failed']} "
            f"in-flight {s['children_in_flight']} "
            f"| {s['rate']:.1f}/s | archive {s['archive_size']} coverage {s['coverage']:.1%} "
            f"QD {_fmt(s['qd_score'])} best {_fmt(s['best_fitness'])} | ETA {_seconds(s['eta'])}"
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
        table.add_row("ETA (budget)", _seconds(s["eta"]))
        return table
