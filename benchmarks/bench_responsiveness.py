"""GUI responsiveness while a registration runs (issue #5), on the 1 mm MNI152 brain.

In a real napari viewer (run it under Xvfb: ``xvfb-run -a python benchmarks/...``) the
Register panel runs an affine registration of the MNI T1 against a copy moved by a known
affine, while

* a 10 ms ``QTimer`` probe records how late the Qt event loop serves it (latency = the
  gap between two timeouts minus 10 ms: what a user's click or scroll would wait);
* every refresh of the "warped (live)" layer is counted (overlay refresh rate), over the
  whole run and while the optimiser produces new transforms, and each frame is matched
  to the core state it shows (how far the view is behind the core);
* the same run is repeated with the live overlay switched off, and the core alone is
  timed headless, so the cost of the live view is visible.

Prints a table and writes ``benchmarks/results/responsiveness_<date>.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
PROBE_MS = 10


def moved_pair():
    """The MNI T1 (fixed) and the T1 moved by a known affine (moving), 1 mm."""
    from napari_reg.core.image import Volume
    from napari_reg.core.resample import resample
    from pairs import load_mni, random_affine

    t1, _, _, affine = load_mni()
    fixed = Volume(t1.astype(np.float32), affine, "fixed (MNI T1 1 mm)")
    truth = random_affine(np.random.default_rng(5), fixed.center_world())
    moving = resample(fixed, fixed, np.linalg.inv(truth))  # moving(T x) = fixed(x)
    return fixed, Volume(moving.data, affine, "moving (moved T1)"), truth


def run_in_viewer(viewer, register_panel, live: bool) -> dict:
    """One run through the Register panel inside a real Qt event loop; measurements."""
    from qtpy.QtCore import QEventLoop, QTimer

    try:
        from napari_reg.runs.background import BackgroundRun as run_class
    except ImportError:  # an older checkout (before-and-after runs)
        from napari_reg.widgets._worker import RegistrationJob as run_class
    import napari_reg.widgets.overlay as overlay
    try:
        from napari_reg.core.preview import preview_of
    except ImportError:  # an older checkout (before-and-after runs): no previews there
        def preview_of(transform):
            return transform

    # Which core state each frame shows: events are numbered as the worker reports them;
    # a warp is tagged with the number of the transform it draws, a frame with its warp's.
    # (ids are looked up while the objects are alive, so a reused id is harmless.)
    emitted: list[tuple[float, str]] = []  # (time, kind) per event, in order
    number_of: dict[int, int] = {}
    frame_number: dict[int, int] = {}
    refreshes: list[tuple[float, int]] = []  # (time, number of the event shown; -1 final)
    original = (overlay.LiveOverlay._show, overlay._timed_warp,
                run_class._callback)

    def numbered_callback(self, event):
        original[2](self, event)  # raises Cancelled on Stop, as before
        for t in (event.transform, preview_of(event.transform)):
            number_of[id(t)] = len(emitted)
        emitted.append((time.perf_counter(), event.kind))

    def tagged_warp(moving, transform, shape, grid_affine):
        out = original[1](moving, transform, shape, grid_affine)
        frame_number[id(out[0])] = number_of.get(id(transform), -1)
        return out

    def counting_show(self, data, affine):
        refreshes.append((time.perf_counter(), frame_number.pop(id(data), -1)))
        return original[0](self, data, affine)

    overlay.LiveOverlay._show = counting_show
    overlay._timed_warp = tagged_warp
    run_class._callback = numbered_callback
    ticks: list[float] = []
    probe = QTimer()
    probe.setInterval(PROBE_MS)
    probe.timeout.connect(lambda: ticks.append(time.perf_counter()))
    loop = QEventLoop()
    watcher = QTimer()
    watcher.setInterval(20)
    watcher.timeout.connect(lambda: None if register_panel.running else loop.quit())
    register_panel.live.value = live
    try:
        probe.start()
        t0 = time.perf_counter()
        register_panel.run()
        watcher.start()
        loop.exec_()
        t1 = time.perf_counter()
    finally:
        probe.stop()
        watcher.stop()
        overlay.LiveOverlay._show, overlay._timed_warp = original[:2]
        run_class._callback = original[2]
    outcome = register_panel._session.outcome
    core_s = outcome.result.timings["total_s"]
    # "During the run" = while the core optimises; the end (full-resolution warp swapped
    # into the layer once) is reported apart as the worst gap of the whole run.
    ticks_arr = np.asarray(ticks)
    during = ticks_arr[ticks_arr <= t0 + core_s]
    gaps = np.diff(during) * 1000.0 - PROBE_MS if len(during) > 1 else np.array([np.nan])
    all_gaps = np.diff(ticks_arr) * 1000.0 - PROBE_MS
    t_end = t0 + core_s
    shown = [t for t, _ in refreshes if t <= t_end]
    # While optimising = from the first iteration event to the end of the core: the time
    # in which new transforms exist to be shown (setup emits one initial event only).
    iters = [t for t, kind in emitted if kind == "iteration"]
    opt_start = iters[0] if iters else t_end
    opt_s = max(t_end - opt_start, 1e-9)
    opt_frames = sum(1 for t in shown if t >= opt_start)
    # How far the view is behind the core: at every probe tick while optimising, the age
    # of the oldest state the view has not shown yet (0 when it shows the newest).
    behind = []
    for tick in ticks_arr[(ticks_arr >= opt_start) & (ticks_arr <= t_end)]:
        numbers = [n for t, n in refreshes if t <= tick and n >= 0]
        first_unseen = (max(numbers) + 1) if numbers else 0
        pending = [t for t, _ in emitted[first_unseen:] if t <= tick]
        behind.append((tick - pending[0]) * 1000.0 if pending else 0.0)
    return {
        "live": live,
        "wall_s": t1 - t0,
        "core_s": core_s,
        "refreshes": len(shown),
        "refresh_hz": len(shown) / core_s,
        "opt_s": opt_s,
        "opt_refresh_hz": opt_frames / opt_s,
        "opt_states_hz": sum(1 for t in iters if t <= t_end) / opt_s,
        "behind_p95_ms": float(np.percentile(behind, 95)) if behind else float("nan"),
        "first_frame_s": (shown[0] - t0) if shown else float("nan"),
        # for inspection: (seconds from the click, event number) of frames and events
        "frames": [(t - t0, n) for t, n in refreshes],
        "events": [(t - t0, kind) for t, kind in emitted],
        "latency_p50_ms": float(np.percentile(gaps, 50)),
        "latency_p99_ms": float(np.percentile(gaps, 99)),
        "latency_max_ms": float(np.max(gaps)),
        "latency_max_whole_ms": float(np.max(all_gaps)),
        "matrix": outcome.result.matrix,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="runs per setting")
    parser.add_argument("--out", type=Path, default=None,
                        help="results file (default results/responsiveness_<date>.md)")
    parser.add_argument("--presets", default="Affine,Affine + diffeomorphic",
                        help="comma list of Register panel presets to run")
    args = parser.parse_args()
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    import napari

    from napari_reg import PRESETS, register
    from napari_reg.layers import volume_to_layer_data
    from napari_reg.widgets.load_widget import LoadWidget
    from napari_reg.widgets.register_widget import RegisterWidget

    load_before = os.getloadavg()
    fixed, moving, truth = moved_pair()
    headless: dict[str, list[float]] = {p: [] for p in presets}
    for preset in presets:
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            register(fixed, moving, **PRESETS[preset])
            headless[preset].append(time.perf_counter() - t0)

    viewer = napari.Viewer(show=True)
    for volume in (fixed, moving):
        data, kwargs, _ = volume_to_layer_data(volume, "image")
        kwargs["name"] = volume.name
        viewer.add_image(data, **kwargs)
    load_panel, register_panel = LoadWidget(viewer), RegisterWidget(viewer)
    viewer.window.add_dock_widget(load_panel)
    viewer.window.add_dock_widget(register_panel)
    viewer.dims.order = (2, 1, 0)  # an axial view: the overlay must follow rotations
    # A user clicks Run in a window that is already up: let it lay out and paint first.
    from qtpy.QtWidgets import QApplication

    settle_until = time.perf_counter() + 1.0
    while time.perf_counter() < settle_until:
        QApplication.processEvents()
        time.sleep(0.01)
    rows = []
    for preset in presets:
        register_panel.preset.value = preset
        for _ in range(args.repeats):
            for live in (True, False):
                rows.append({"preset": preset, **run_in_viewer(viewer, register_panel, live)})
    viewer.close()

    def median(key: str, preset: str, live: bool) -> float:
        return float(np.median([r[key] for r in rows
                                if r["live"] == live and r["preset"] == preset]))

    load = os.getloadavg()
    lines = [
        f"# GUI responsiveness, {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {os.cpu_count()} cores, software OpenGL under Xvfb; load average "
        f"{load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f} before and "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end (shared machine). "
        f"MNI152 1 mm T1 {fixed.shape} vs a copy moved by a known affine; Register panel "
        f"presets; {args.repeats} runs per setting (live on and off interleaved), medians.",
        "",
        "Columns: *core s* = the core's own time (`register()` total; headless = the same "
        "call without a viewer). *refreshes/s (run)* = live-layer updates per second of the "
        "whole core time, setup included (the original metric). *while optimising* = from "
        "the first iteration event to the end of the core, the time in which new "
        "transforms exist: *refreshes/s* shown then, and *states/s* = iterations the "
        "core produced per second then (a view cannot show more new states than that). "
        "*behind p95 ms* = at each probe tick while optimising, how long the oldest state "
        "not yet on screen has been waiting (0 = the view shows the newest), 95th "
        "percentile. *first frame s* = when the overlay first showed something. Latency = "
        f"how late a {PROBE_MS} ms QTimer probe fires in the Qt event loop while the core "
        "runs; *end gap* = the longest gap of the whole run, including the one-off swap of "
        "the full-resolution result into the layer. *slowdown* = core s live on / live off.",
        "",
        "| preset | live | core s headless | core s | run wall s | refreshes/s (run) | "
        "optimising s | refreshes/s (optimising) | states/s (optimising) | behind p95 ms | "
        "first frame s | latency p50 ms | latency p99 ms | latency max ms | end gap ms | "
        "slowdown |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for preset in presets:
        slowdown = median("core_s", preset, True) / median("core_s", preset, False) - 1.0
        for live in (True, False):
            def cell(key: str, fmt: str, live: bool = live, preset: str = preset) -> str:
                return format(median(key, preset, live), fmt) if live else ""
            lines.append(
                f"| {preset} | {'on' if live else 'off'} | "
                f"{float(np.median(headless[preset])):.2f} | "
                f"{median('core_s', preset, live):.2f} | {median('wall_s', preset, live):.2f} | "
                f"{cell('refresh_hz', '.1f')} | {median('opt_s', preset, live):.2f} | "
                f"{cell('opt_refresh_hz', '.1f')} | {median('opt_states_hz', preset, live):.1f} | "
                f"{cell('behind_p95_ms', '.0f')} | {cell('first_frame_s', '.2f')} | "
                f"{median('latency_p50_ms', preset, live):.1f} | "
                f"{median('latency_p99_ms', preset, live):.1f} | "
                f"{median('latency_max_ms', preset, live):.1f} | "
                f"{median('latency_max_whole_ms', preset, live):.0f} | "
                f"{f'{100 * slowdown:+.0f} %' if live else ''} |")
    lines += ["", "Targets (issue #5): latency p99 < 50 ms, >= 10 refreshes/s, slowdown < 20 %."]
    lines += ["", "Per run (core s / refreshes/s optimising / latency p99 ms):", ""]
    for r in rows:
        lines.append(f"- {r['preset']}, live {'on' if r['live'] else 'off'}: "
                     f"{r['core_s']:.2f} s / {r['opt_refresh_hz'] if r['live'] else 0:.1f} / "
                     f"{r['latency_p99_ms']:.1f}")
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    out = args.out or RESULTS / f"responsiveness_{dt.date.today().isoformat()}.md"
    out.write_text(text)
    print(f"written {out}")


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
