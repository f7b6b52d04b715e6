"""Progress of long work: named steps with a known total, reported to an optional callback.

A callback receives ``(message, done, total)``; ``total`` is None until it is known. The CLI
draws it as a bar with an ETA on a terminal and as plain lines (:class:`LineProgress`)
otherwise; flows and tests may pass nothing. The ETA (:class:`Eta`) comes from the time the
completed steps took, however long one step is.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TextIO

StepCallback = Callable[[str, int, int | None], None]


class Steps:
    """Counts steps: ``steps(msg)`` reports the step that starts now and counts the one before."""

    def __init__(self, callback: StepCallback | None = None, total: int | None = None) -> None:
        self.callback, self.total, self.done = callback, total, 0
        self._started = False

    def __call__(self, message: str) -> None:
        if self._started:
            self.done += 1
        self._started = True
        if self.callback:
            self.callback(message, self.done, self.total)

    def finish(self, message: str = "done") -> None:
        """Mark the last step done."""
        self.done = self.total if self.total is not None else self.done + 1
        if self.callback:
            self.callback(message, self.done, self.total)


def remaining_seconds(elapsed_at_done: float, done: int, total: int | None,
                      since_done: float = 0.0) -> float | None:
    """Seconds left, from the time the completed steps took.

    ``elapsed_at_done``: seconds from the start to the moment the ``done``-th step completed;
    ``since_done``: seconds since then. With a mean of ``elapsed_at_done / done`` seconds a
    step, the ``total - done`` steps left take that many means; the one under way has run for
    ``since_done`` already, but it is never counted below zero (an overrunning step leaves the
    estimate of the steps after it). None until a step is done and the total is known.
    """
    if total is None or done < 1:
        return None
    if done >= total:
        return 0.0
    per_step = elapsed_at_done / done
    left = total - done
    return max(per_step * left - since_done, per_step * (left - 1), 0.0)


def clock_text(seconds: float | None) -> str:
    """``H:MM:SS`` (``-:--:--`` when unknown)."""
    if seconds is None:
        return "-:--:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Eta:
    """Elapsed time and ETA of work reported as ``(done, total)``; ``clock`` for tests."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.start = self.at_done = clock()
        self.done, self.total = 0, None

    def update(self, done: int, total: int | None) -> None:
        if done != self.done:
            self.at_done = self.clock()
        self.done, self.total = done, total

    def elapsed(self) -> float:
        return self.clock() - self.start

    def remaining(self) -> float | None:
        return remaining_seconds(self.at_done - self.start, self.done, self.total,
                                 self.clock() - self.at_done)


def progress_line(what: str, unit: str, eta: Eta, message: str = "") -> str:
    """The state of ``eta`` as one line, e.g.
    ``train: 12/60 steps · elapsed 0:01:10 · eta 0:04:40 · short: fold 3/12 test 2014``."""
    done, total = eta.done, eta.total
    count = f"{done}/{total if total is not None else '?'}" + (f" {unit}" if unit else "")
    parts = [f"{what}: {count}", f"elapsed {clock_text(eta.elapsed())}"]
    if total is None or done < total:
        parts.append(f"eta {clock_text(eta.remaining())}")
    if message:
        parts.append(message)
    return " · ".join(parts)


class LineProgress:
    """Progress as plain lines (for a log file or a pipe, where a bar draws nothing).

    A ``(message, done, total)`` callback that writes :func:`progress_line` to ``stream`` on
    the first call, whenever about ``every_pct`` percent more of the total is done, at least
    every ``every_s`` seconds while calls come, and when the work is complete.
    """

    def __init__(self, what: str, stream: TextIO, unit: str = "steps", every_s: float = 30.0,
                 every_pct: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.what, self.stream, self.unit = what, stream, unit
        self.every_s, self.every_pct = every_s, every_pct
        self.eta = Eta(clock)
        self._last_at: float | None = None
        self._last_done = -1

    def __call__(self, message: str, done: int, total: int | None) -> None:
        self.eta.update(done, total)
        now = self.eta.clock()
        step = max(1, math.ceil((total or 0) * self.every_pct / 100))
        due = (self._last_at is None or now - self._last_at >= self.every_s
               or done >= self._last_done + step
               or (total is not None and done >= total > self._last_done))
        if not due:
            return
        self._last_at, self._last_done = now, done
        self.stream.write(progress_line(self.what, self.unit, self.eta, message) + "\n")
        self.stream.flush()
