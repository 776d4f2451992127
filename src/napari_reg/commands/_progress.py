"""A one-line terminal progress display for the command line (stderr, throttled)."""

from __future__ import annotations

import sys
import time

from ..core.engine.events import ProgressEvent


class TerminalProgress:
    """Callback that redraws one status line at most ``rate`` times a second."""

    def __init__(self, stream=None, rate: float = 10.0) -> None:
        self.stream = stream or sys.stderr
        self.interval = 1.0 / rate
        self._last = 0.0
        self._tty = getattr(self.stream, "isatty", lambda: False)()

    def __call__(self, event: ProgressEvent) -> None:
        now = time.monotonic()
        boundary = event.kind in ("level_end", "done")
        if not boundary and now - self._last < self.interval:
            return
        self._last = now
        width = 20
        fraction = min(1.0, (event.iteration + 1) / max(event.max_iterations, 1))
        bar = "#" * int(round(width * fraction)) + "-" * (width - int(round(width * fraction)))
        line = (f"[{event.stage_name}] level {event.level + 1}/{event.n_levels} "
                f"[{bar}] iter {event.iteration:4d}  cost {event.cost: .6g}  "
                f"{event.elapsed:6.1f} s")
        if event.kind == "done":
            line = f"done: cost {event.cost: .6g} after {event.elapsed:.1f} s"
        if self._tty:
            end = "\n" if event.kind in ("level_end", "done") else ""
            self.stream.write("\r\033[K" + line + end)
        elif boundary:
            self.stream.write(line + "\n")
        self.stream.flush()
