"""A registration target slowed down per iteration, for GUI tests.

The Register panel runs its target in a worker process (napari_reg.runs.process), so a
test cannot slow the core by patching a module in its own process: it hands the panel
this picklable target instead. The delay per iteration is read from a file at every
iteration, so a test can change it in the middle of a run. The maths is untouched.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from napari_reg.runs.tasks import register_and_warp


class SlowRegisterAndWarp:
    """``register_and_warp`` with a sleep of ``float(delay_file)`` s per iteration."""

    def __init__(self, delay_file: Path):
        self.delay_file = Path(delay_file)

    def __call__(self, fixed: Any, moving: Any, settings: dict, *, callback: Any,
                 cancel: Any) -> Any:
        def on_event(event: Any) -> None:
            if event.kind == "iteration":
                time.sleep(float(self.delay_file.read_text()))
            callback(event)

        return register_and_warp(fixed, moving, settings, callback=on_event, cancel=cancel)


class SlowCore:
    """What the ``slow_core`` fixture gives a test: set ``delay`` (s per iteration)."""

    def __init__(self, folder: Path, delay: float = 0.02):
        self.target = SlowRegisterAndWarp(Path(folder) / "delay_per_iteration_s")
        self.delay = delay

    @property
    def delay(self) -> float:
        return float(self.target.delay_file.read_text())

    @delay.setter
    def delay(self, seconds: float) -> None:
        self.target.delay_file.write_text(repr(float(seconds)))
