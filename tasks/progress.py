"""Progress of long work: named steps with a known total, reported to an optional callback.

A callback receives ``(message, done, total)``; ``total`` is None until it is known. The CLI
draws it as a bar with an ETA; flows and tests may pass nothing.
"""

from __future__ import annotations

from collections.abc import Callable

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
