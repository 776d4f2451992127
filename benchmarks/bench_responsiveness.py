"""GUI responsiveness while a registration runs (issues 5 and 16), on the 1 mm MNI152 brain.

In a real napari viewer (run it under Xvfb: ``xvfb-run -a python benchmarks/...``) the
Register panel runs each preset (Affine, Affine + B-spline, Affine + diffeomorphic) on
the MNI T1 against a copy moved by a known affine, while

* a 10 ms ``QTimer`` probe records how late the Qt event loop serves it (latency = the
  gap between two timeouts minus 10 ms: what a user's click or scroll would wait);
* every refresh of the "warped (live)" layer is counted, while the optimiser produces
  new states, and each frame is matched to the core state it shows;
* every event of napari's main window is timed (repaints are among them) and the GUI
  thread's CPU time is taken, so it is visible where the GUI thread's time goes;
* the same run is repeated with the live overlay switched off, and right before, the
  same ``register()`` call runs headless (the CLI's time in the same conditions).

A "busy machine" setting (``--busy N``) runs N CPU-bound background processes for the
whole measurement (a user's laptop doing other work); ``--compare-busy`` measures quiet
and busy in the same invocation; ``--switch-intervals`` repeats the GUI runs with other
Python GIL switch intervals. Before/after comparisons: run the script in turns with
``PYTHONPATH`` pointing at each checkout (``--version-label``, ``--json``), then
``--merge`` the JSON files into one table (the shared machine's load drifts: compare
runs taken in turns, and the load average recorded with each).

Why GUI runs suffer more than CLI runs on a busy machine (measured with py-spy and the
window columns, 2026-12-02): the registration thread and the GUI thread share one GIL,
and napari reimplements its main window's ``event()`` in Python, so every repaint of the
window (widget painting, the OpenGL composition of the canvas, software llvmpipe under
Xvfb, and the wait for the X server) runs inside a Python call *with the GIL held*. In
20 s of an Affine + B-spline run at load 8, the GUI thread held the GIL in 82 % of the
samples that had a holder (58 % in the C++ part of that ``event()``), the registration
thread in 13 %. On a busy machine the rasteriser threads and the X server the repaint
waits for get a fraction of a core, so a repaint holds the GIL several times longer
while using no more CPU: the GUI thread spent 18-35 % of the run's wall time inside
window events but only 3-5 % on the CPU. The registration thread cannot run Python
meanwhile; the CLI has no second thread. What is ours: how often the panel makes the
window repaint, and how much CPU each live frame takes from the optimiser (see the
README of this folder); the GIL held across napari's ``event()`` is napari's.

Prints a table and writes ``benchmarks/results/responsiveness_<date>.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np

from responsiveness_table import summarise

RESULTS = Path(__file__).resolve().parent / "results"
PROBE_MS = 10
# a gap between two states longer than this is time the optimiser made no states in
ACTIVE_GAP_S = 0.25


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

    # where the panel's run receives events: the worker process's reader thread, or (older
    # checkouts, before-and-after runs) the worker thread's callback
    try:
        from napari_reg.runs.process import ProcessRun as run_class
        receive = "_received"
    except ImportError:
        receive = "_callback"
        try:
            from napari_reg.runs.background import BackgroundRun as run_class
        except ImportError:
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
    stage_of: list[str] = []  # the stage of each of those events
    number_of: dict[int, int] = {}
    frame_number: dict[int, int] = {}
    refreshes: list[tuple[float, int]] = []  # (time, number of the event shown; -1 final)
    # frames are made by a frame process (FramePump's RemoteStream: tagged when the
    # request is submitted and when its frame comes back) or by render_frame on the
    # pump's thread, and shown by LiveOverlay._show_frame; older checkouts
    # (before-and-after runs): by overlay._render(moving, transform, ...) or _timed_warp,
    # shown by _show
    patches = []  # (owner, attribute, replacement)
    try:
        import napari_reg.widgets._frame_pump as pump
        from napari_reg.runs.service import RemoteStream
    except ImportError:
        pump = None
    new_style = pump is not None or hasattr(overlay, "_render")
    warp_owner = pump if pump is not None else overlay
    names = ("_show_frame", "render_frame" if pump is not None else "_render") \
        if new_style else ("_show", "_timed_warp")
    original = (getattr(overlay.LiveOverlay, names[0]), getattr(warp_owner, names[1]),
                getattr(run_class, receive))
    if pump is not None:
        stream_number: dict[int, int] = {}  # submitted request -> event number
        submit, reply = RemoteStream.submit, pump.FramePump._stream_reply

        def tagged_submit(self, request):
            number = submit(self, request)
            stream_number[number] = number_of.get(id(request.transform), -1)
            return number

        def tagged_reply(self, number, frame, error):
            if frame is not None:
                frame_number[id(frame)] = stream_number.get(number, -1)
            return reply(self, number, frame, error)

        patches += [(RemoteStream, "submit", tagged_submit),
                    (pump.FramePump, "_stream_reply", tagged_reply)]

    def numbered_callback(self, event):
        original[2](self, event)  # raises Cancelled on Stop, as before
        if event.transform is not None:  # a worker process sends some without one
            for t in (event.transform, preview_of(event.transform)):
                number_of[id(t)] = len(emitted)
        emitted.append((time.perf_counter(), event.kind))
        stage_of.append(event.stage_name)

    def tagged_warp(first, second, *args):
        out = original[1](first, second, *args)
        transform = second.transform if pump is not None else second
        frame_number[id(out if new_style else out[0])] = number_of.get(id(transform), -1)
        return out

    def counting_show(self, frame, *args):
        refreshes.append((time.perf_counter(), frame_number.pop(id(frame), -1)))
        return original[0](self, frame, *args)

    # Where the GUI thread's time goes: every event of the main window (painting and
    # composing the whole window is one, handled in C++ *with the GIL held*, because
    # napari reimplements the window's event() in Python), timed, and the GUI thread's
    # CPU time.
    from napari._qt.qt_main_window import _QtMainWindow

    window_event = _QtMainWindow.event
    in_window = {"s": 0.0, "paints": 0}
    from qtpy.QtCore import QEvent

    paint_types = (QEvent.Type.UpdateRequest, QEvent.Type.Paint)

    def timed_event(self, e):
        start = time.perf_counter()
        try:
            return window_event(self, e)
        finally:
            in_window["s"] += time.perf_counter() - start
            in_window["paints"] += e.type() in paint_types

    setattr(overlay.LiveOverlay, names[0], counting_show)
    setattr(warp_owner, names[1], tagged_warp)
    patches = [(owner, name, getattr(owner, name), new) for owner, name, new in patches]
    for owner, name, _, new in patches:
        setattr(owner, name, new)
    setattr(run_class, receive, numbered_callback)
    _QtMainWindow.event = timed_event
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
        cpu0, proc0 = time.thread_time(), time.process_time()
        t0 = time.perf_counter()
        register_panel.run()
        watcher.start()
        loop.exec_()
        t1 = time.perf_counter()
        gui_cpu_s = time.thread_time() - cpu0
        # the whole GUI process: its GUI thread, the live warp thread, the software
        # rasteriser's threads (and the registration itself when it runs on a thread)
        proc_cpu_s = time.process_time() - proc0
    finally:
        probe.stop()
        watcher.stop()
        setattr(overlay.LiveOverlay, names[0], original[0])
        setattr(warp_owner, names[1], original[1])
        for owner, name, old, _ in patches:
            setattr(owner, name, old)
        setattr(run_class, receive, original[2])
        _QtMainWindow.event = window_event
    outcome = register_panel._session.outcome
    core_s = outcome.result.timings["total_s"]
    # "During the run" = while the core optimises; the end (full-resolution warp swapped
    # into the layer once) is reported apart as the worst gap of the whole run.
    ticks_arr = np.asarray(ticks)
    # The core's end on this clock: when its final ("done") event arrived (the core may
    # run in a worker process that starts after the click), else click + core time.
    done = [t for t, kind in emitted if kind == "done"]
    t_end = done[-1] if done else t0 + core_s
    during = ticks_arr[ticks_arr <= t_end]
    gaps = np.diff(during) * 1000.0 - PROBE_MS if len(during) > 1 else np.array([np.nan])
    all_gaps = np.diff(ticks_arr) * 1000.0 - PROBE_MS
    shown = [t for t, _ in refreshes if t <= t_end]
    # While optimising = from the first iteration event to the end of the core: the time
    # in which new transforms exist to be shown (setup emits one initial event only).
    iters = [t for t, kind in emitted if kind == "iteration"]
    opt_start = iters[0] if iters else t_end
    opt_s = max(t_end - opt_start, 1e-9)
    opt_frames = sum(1 for t in shown if t >= opt_start)
    # While states come: the optimiser also spends time without making states (building
    # a level's pyramid and B-spline grid: ~1 s per level on this brain), in which a view
    # has nothing new to draw. Time counts here up to ACTIVE_GAP_S after each state, and a
    # frame if it is shown within that long after the newest state.
    opt_iters = np.asarray([t for t in iters if t <= t_end])
    active_s = float(np.minimum(np.diff(np.append(opt_iters, t_end)), ACTIVE_GAP_S).sum()) \
        if len(opt_iters) else 0.0
    active_frames = 0
    for t in shown:
        k = np.searchsorted(opt_iters, t, side="right") - 1
        active_frames += bool(k >= 0 and t - opt_iters[k] <= ACTIVE_GAP_S)
    # How far the view is behind the core: at every probe tick while optimising, the age
    # of the oldest state the view has not shown yet (0 when it shows the newest).
    behind = []
    for tick in ticks_arr[(ticks_arr >= opt_start) & (ticks_arr <= t_end)]:
        numbers = [n for t, n in refreshes if t <= tick and n >= 0]
        first_unseen = (max(numbers) + 1) if numbers else 0
        pending = [t for t, _ in emitted[first_unseen:] if t <= tick]
        behind.append((tick - pending[0]) * 1000.0 if pending else 0.0)
    # The run's last stage alone (the deformable one of a deformable preset: most of the
    # run, and the states a user watches): its states/s and the frames shown meanwhile.
    last_stage = stage_of[-1] if stage_of else ""
    last_iters = [t for (t, kind), st in zip(emitted, stage_of, strict=True)
                  if kind == "iteration" and st == last_stage and t <= t_end]
    last_s = max((t_end - last_iters[0]) if last_iters else 0.0, 1e-9)
    return {
        "last_stage": last_stage,
        "last_states_hz": len(last_iters) / last_s,
        "last_refresh_hz": sum(1 for t in shown if last_iters and t >= last_iters[0]) / last_s,
        "live": live,
        "wall_s": t1 - t0,
        "core_s": core_s,
        "refreshes": len(shown),
        "refresh_hz": len(shown) / core_s,
        "opt_s": opt_s,
        "opt_refresh_hz": opt_frames / opt_s,
        "opt_states_hz": sum(1 for t in iters if t <= t_end) / opt_s,
        "active_refresh_hz": active_frames / max(active_s, 1e-9),
        "active_states_hz": len(opt_iters) / max(active_s, 1e-9),
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
        # share of the run's wall time the GUI thread spent in window events (painting,
        # GIL held) and on the CPU at all; window paints per second
        "window_share": in_window["s"] / (t1 - t0),
        "gui_cpu_share": gui_cpu_s / (t1 - t0),
        "proc_cpu_share": proc_cpu_s / (t1 - t0),
        "paint_hz": in_window["paints"] / (t1 - t0),
    }


def _spin(_: int) -> None:  # pragma: no cover - a busy background process
    x = 0
    while True:
        x = (x * 1103515245 + 12345) % 2147483648


class BusyMachine:
    """``n`` CPU-bound processes while the context is open (0: a no-op)."""

    def __init__(self, n: int):
        self.n, self.procs = n, []

    def __enter__(self) -> BusyMachine:
        ctx = multiprocessing.get_context("spawn")
        self.procs = [ctx.Process(target=_spin, args=(k,), daemon=True) for k in range(self.n)]
        for p in self.procs:
            p.start()
        time.sleep(0.5 if self.n else 0.0)
        return self

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.join(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="runs per setting")
    parser.add_argument("--out", type=Path, default=None,
                        help="results file (default results/responsiveness_<date>.md)")
    parser.add_argument("--presets", default="Affine,Affine + B-spline,Affine + diffeomorphic",
                        help="comma list of Register panel presets to run")
    parser.add_argument("--busy", type=int, default=0,
                        help="CPU-bound background processes during the runs (busy machine)")
    parser.add_argument("--compare-busy", action="store_true",
                        help="measure quiet (0) and --busy in the same invocation")
    parser.add_argument("--switch-intervals", default="",
                        help="comma list of sys.setswitchinterval values (s) for GUI runs; "
                             "default: the product's own setting only")
    parser.add_argument("--version-label", default="-",
                        help="a name for the checkout measured (before/after comparisons)")
    parser.add_argument("--json", type=Path, default=None,
                        help="also write every run as JSON (for --merge)")
    parser.add_argument("--merge", type=Path, nargs="*", default=None,
                        help="only print one table of these JSON files' runs (e.g. before "
                             "and after runs taken in turns)")
    args = parser.parse_args()
    if args.merge:
        rows = [r for path in args.merge for r in json.loads(path.read_text())]
        print("\n".join(summarise(rows)))
        return
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    busy_levels = [0, args.busy] if args.compare_busy else [args.busy]
    intervals = [float(v) for v in args.switch_intervals.split(",") if v.strip()] or [None]
    import napari

    from napari_reg import PRESETS, register
    from napari_reg.layers import volume_to_layer_data
    from napari_reg.widgets.load_widget import LoadWidget
    from napari_reg.widgets.register_widget import RegisterWidget

    load_before = os.getloadavg()
    fixed, moving, truth = moved_pair()

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1280, 800)
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
    default_interval = sys.getswitchinterval()
    for busy in busy_levels:
        with BusyMachine(busy):
            for preset in presets:
                register_panel.preset.value = preset
                for interval in intervals:
                    for _ in range(args.repeats):
                        # the CLI's time in the same conditions, right before its GUI runs
                        t0 = time.perf_counter()
                        register(fixed, moving, **PRESETS[preset])
                        cli_s = time.perf_counter() - t0
                        for live in (True, False):
                            load = os.getloadavg()[0]
                            if interval is not None:
                                sys.setswitchinterval(interval)
                            try:
                                row = run_in_viewer(viewer, register_panel, live)
                            finally:
                                sys.setswitchinterval(default_interval)
                            row.pop("matrix")
                            rows.append({"version": args.version_label, "preset": preset,
                                         "busy": busy, "interval": interval, "load": load,
                                         "cli_s": cli_s, "gui_cli": row["core_s"] / cli_s,
                                         **row})
    viewer.close()
    load = os.getloadavg()
    lines = [
        f"# GUI responsiveness, {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {os.cpu_count()} cores, software OpenGL under Xvfb; load average "
        f"{load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f} before and "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end (shared machine). "
        f"MNI152 1 mm T1 {fixed.shape} vs a copy moved by a known affine; Register panel "
        f"presets in a 1280x800 window; {args.repeats} runs per setting (CLI, live on, live "
        "off in turn), medians.",
        "",
        "Columns: *CLI s* = the same `register()` call headless, run right before the GUI "
        "runs of the same setting; *core s* = the core's own time in the GUI "
        "(`register()` total); *GUI/CLI* = core s / CLI s; *click to result s* = from the "
        "click on Run to the result on screen (the core, the full-resolution warp, and "
        "with a worker process the transfers). *While optimising* = from the "
        "first iteration event to the end of the core: *refreshes/s* of the live layer "
        "then, *states/s* = iterations the core produced per second then (a view cannot "
        "show more new states than that). *States coming* = the same, counting only the "
        f"time up to {ACTIVE_GAP_S} s after each state and the frames shown then (the "
        "optimiser makes no states while it builds a level: ~1 s per level). "
        "*behind p95 ms* = at each probe tick while "
        "optimising, how long the oldest state not yet on screen has been waiting. "
        f"*latency p99* = how late a {PROBE_MS} ms QTimer probe fires in the Qt event loop "
        "while the core runs; *end gap* = the longest gap of the whole run. *window "
        "paints/s* = paint/update-request events of the main window per second of the run; "
        "*GUI thread in window events* = share of the run's wall time spent in the main "
        "window's event() (painting and composing the window: C++ run with the GIL held, "
        "because napari reimplements that event() in Python); *GUI thread CPU* = its CPU "
        "time / wall time; *GUI process CPU %* = the CPU time of all the viewer process's "
        "threads / wall time (with the core in a worker process: what the viewer takes "
        "from the machine the core runs on); *last stage* columns: the same for the run's "
        "last stage alone (the deformable one). *load avg* = 1-minute load average when the "
        "run started. "
        "*slowdown* = core s live on / live off. *busy* = CPU-bound background processes "
        "(0 = as the machine was); *GIL s* = sys.setswitchinterval during GUI runs "
        "(- = Python's default).",
        "",
        *summarise(rows),
        "",
        "Targets (issue 16): live view costs < 20 %, >= 10 refreshes/s while optimising "
        "(or every state produced); event-loop latency p99 < 50 ms.",
        "",
        "Per run (version, busy, preset, live: core s / CLI s / refreshes/s optimising / "
        "load):",
        "",
    ]
    for r in rows:
        lines.append(f"- {r['version']}, busy {r['busy']}, GIL {r['interval']}, {r['preset']}, "
                     f"live {'on' if r['live'] else 'off'}: {r['core_s']:.2f} / "
                     f"{r['cli_s']:.2f} / {r['opt_refresh_hz'] if r['live'] else 0:.1f} / "
                     f"{r['load']:.1f}")
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    out = args.out or RESULTS / f"responsiveness_{dt.date.today().isoformat()}.md"
    out.write_text(text)
    print(f"written {out}")
    if args.json:
        keep = [{k: v for k, v in r.items() if k not in ("frames", "events")} for r in rows]
        args.json.write_text(json.dumps(keep, indent=1))
        print(f"written {args.json}")


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
