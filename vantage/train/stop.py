"""Stopping a run cleanly on Ctrl-C / SIGTERM: finish the step, write a checkpoint, exit.

:class:`StopRequest` installs handlers for SIGINT and SIGTERM (main thread only; elsewhere, e.g. a
notebook worker thread, it only offers :meth:`StopRequest.request`). The first signal sets a flag
that the trainer reads at the end of the step (in DDP the flag travels in the step's all-reduce,
so every rank stops after the same step); a second signal raises ``KeyboardInterrupt`` at once.
The checkpoint written at the stop is a normal one: running the same command resumes exactly.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

__all__ = ["StopRequest"]


class StopRequest:
    """Context manager: ``requested`` is True once SIGINT/SIGTERM arrived (or :meth:`request` was called)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, say: Any = print) -> None:
        self.requested = False
        self._say = say
        self._previous: dict[int, Any] = {}

    def request(self) -> None:
        """Ask the run to stop after the current step (what the first signal does)."""
        self.requested = True

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self._say(f"{signal.Signals(signum).name}: stopping after this step and writing a checkpoint "
                  f"(send it again to stop at once, without a new checkpoint)")

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                try:
                    self._previous[s] = signal.signal(s, self._handle)
                except (ValueError, OSError):  # pragma: no cover - platforms without the signal
                    pass
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()
