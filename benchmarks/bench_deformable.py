"""Deformable benchmark (issue #4): napari_reg's SyN and B-spline vs elastix, ANTs, DIPY, greedy.

Usage (from the repository root, in the peers' venv, see benchmarks/README.md)::

    /work/benchvenv/bin/python benchmarks/bench_deformable.py [--tools a,b,...]
        [--scaling 0.5,1,2] [--seed S] [--out FILE]
    /work/benchvenv/bin/python benchmarks/bench_deformable.py --render results/X.json

The case (deform_pairs.py): the MNI152 1 mm T1 warped by a known smooth random field
(max 6-10 mm, invertible), mono-modal. Every tool runs in a fresh child process
(multiprocessing "spawn", 2 threads), as in bench_affine.py:

* time / CPU / peak RSS cover the registration call only (images from numpy ->
  registered, the tool's normal outputs included); the export of the dense
  fixed->moving map that the benchmark needs is timed separately ("export s");
* peak RSS = kernel VmHWM reset just before the call (bench_affine._reset_peak).

The errors (mean distance to the truth over the fixed brain mask, GM Dice, Jacobian)
are computed in the parent from each tool's exported map (deform_pairs.evaluate).
``--scaling`` re-runs napari_reg's two models on the same case resampled to 0.5x, 1x,
2x the voxel count (1x reuses the main run's numbers when it ran).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import queue as queue_mod
import resource
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import deform_pairs as dp  # noqa: E402
import deform_peers  # noqa: E402
import peers  # noqa: E402
from bench_affine import _reset_peak, _status_kib, machine_info  # noqa: E402
from deform_report import render_markdown  # noqa: E402

ALL_TOOLS = list(deform_peers.DEFORM_TOOLS)
DEFAULT_TOOLS = ["napari_reg_syn", "napari_reg_bspline", "napari_reg_bspline_ncc",
                 "elastix", "ants", "dipy", "greedy"]
OURS_SCALING = ["napari_reg_syn", "napari_reg_bspline"]
CHILD_TIMEOUT_S = 1800.0


# ---------------------------------------------------------------- child process
def _child(tool: str, case_file: str, field_file: str, queue: mp.Queue) -> None:
    """Register one case with ``tool``; save its exported field; put a record on ``queue``."""
    peers.set_threads()
    os.environ.update(deform_peers.ENV.get(tool, {}))
    # transformix writes deformationField.nii into the working directory: keep it in
    # the run's temporary directory, not in the checkout
    os.chdir(os.path.dirname(os.path.abspath(case_file)))
    # the peers' C++ logs (greedy's optimiser traces) would drown the parent's table
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    out: dict = {"tool": tool}
    try:
        t0 = time.perf_counter()
        try:
            scope: dict = {}
            exec(deform_peers.WARM[tool], scope)  # noqa: S102 - fixed strings
        except ImportError as exc:
            out["error"] = f"not available ({type(exc).__name__}: {exc})"
            queue.put(out)
            return
        out["version"] = str(getattr(scope["m"], "__version__", "?"))
        out["import_s"] = time.perf_counter() - t0
        with np.load(case_file) as z:
            fixed, moving, affine = z["fixed"], z["moving"], z["affine"]
        rss_before = _status_kib("VmRSS")
        out["peak_reset"] = _reset_peak()
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        export = deform_peers.DEFORM_TOOLS[tool](fixed, moving, affine)
        out["time_s"] = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        out["cpu_s"] = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        peak = _status_kib("VmHWM")
        out["peak_rss_mib"] = peak / 1024 if peak else None
        out["delta_rss_mib"] = (peak - rss_before) / 1024 if peak and rss_before else None
        t0 = time.perf_counter()
        u = export()
        out["export_s"] = time.perf_counter() - t0
        np.save(field_file, np.asarray(u, dtype=np.float32))
        out["field_file"] = field_file
    except Exception as exc:  # a tool failure goes into its row
        out["error"] = f"{type(exc).__name__}: {exc}"
        out["traceback"] = traceback.format_exc()
    queue.put(out)


def run_isolated(tool: str, case_file: str, field_file: str,
                 timeout: float = CHILD_TIMEOUT_S) -> dict:
    """One tool on one case in a fresh spawned process; never raises."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(tool, case_file, field_file, queue))
    t0 = time.perf_counter()
    proc.start()
    result = None
    while result is None and time.perf_counter() - t0 < timeout:
        try:
            result = queue.get(timeout=2.0)
        except queue_mod.Empty:
            if not proc.is_alive():  # died without a result (e.g. a crash in C++)
                break
    if result is None:
        proc.join(timeout=5)
        why = (f"no result within {timeout:.0f} s" if proc.is_alive()
               else f"child died with exit code {proc.exitcode}")
        result = {"tool": tool, "error": why}
    proc.join(timeout=30)
    if proc.is_alive():
        proc.terminate()
        proc.join()
    if proc.exitcode not in (0, None) and "error" not in result:
        result["error"] = f"child exited with code {proc.exitcode}"
    result["process_s"] = time.perf_counter() - t0
    return result


def run_tool(tool: str, case: dp.DeformCase, tmp: str) -> dict:
    """Save ``case``, run ``tool`` in a child, evaluate its map against the truth."""
    case_file = os.path.join(tmp, f"{case.name}.npz")
    if not os.path.exists(case_file):
        np.savez(case_file, fixed=case.fixed, moving=case.moving, affine=case.affine)
    field_file = os.path.join(tmp, f"{case.name}-{tool}.npy")
    res = run_isolated(tool, case_file, field_file)
    res.update(case=case.name, shape=list(case.fixed.shape),
               spacing_mm=float(np.linalg.norm(case.affine[:3, :3], axis=0)[0]),
               loadavg=" ".join(f"{v:.2f}" for v in os.getloadavg()))
    if "field_file" in res:
        res.update(dp.evaluate(case, np.load(res.pop("field_file"))))
        os.remove(field_file)
        print(f"  {tool:24s} {res['time_s']:7.1f} s (cpu {res['cpu_s']:6.1f}) peak "
              f"{res['peak_rss_mib']:6.0f} MiB  err {res['err_mean_mm']:.3f} mm "
              f"(max {res['err_max_mm']:.2f})  Dice {res['dice_gm']:.3f}  "
              f"minJ {res['jac_min']:.3f}  folded {res['folded_fraction']:.2e}"
              f"  [load {res['loadavg']}]", flush=True)
    else:
        print(f"  {tool:24s} {res.get('error')}", flush=True)
        if "traceback" in res:
            print(res["traceback"], file=sys.stderr, flush=True)
    return res


# ---------------------------------------------------------------- main
def profile(tool: str, case: dp.DeformCase, top: int = 30) -> int:
    """cProfile one run of ``tool`` (registration + export) on ``case``; print the top
    functions by own time and by cumulative time."""
    import cProfile
    import pstats

    if tool not in deform_peers.DEFORM_TOOLS or not tool.startswith("napari_reg"):
        raise SystemExit(f"--profile takes one of our tools: "
                         f"{[t for t in ALL_TOOLS if t.startswith('napari_reg')]}")
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    u = deform_peers.DEFORM_TOOLS[tool](case.fixed, case.moving, case.affine)()
    prof.disable()
    print(f"{tool}: {time.perf_counter() - t0:.1f} s under the profiler, "
          f"error {dp.evaluate(case, u)['err_mean_mm']:.3f} mm")
    stats = pstats.Stats(prof)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return 0


def _git_state() -> str:
    """HEAD commit (+ '-dirty' when src/ has uncommitted changes): which code was timed."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE,
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "../src"], cwd=HERE,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return head + ("-dirty" if dirty else "")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tools", default=",".join(DEFAULT_TOOLS),
                   help=f"comma list from {','.join(ALL_TOOLS)} ('none' for scaling only)")
    p.add_argument("--scaling", default="0.5,1,2",
                   help="voxel-count factors for napari_reg's scaling runs ('' to skip)")
    p.add_argument("--step", type=int, default=1,
                   help="keep every step-th voxel of the template (2: a quick check)")
    p.add_argument("--max-mm", type=float, default=None,
                   help="largest displacement over the brain, mm (default: drawn in 6-10)")
    p.add_argument("--seed", type=int, default=20261124, help="RNG seed of the field")
    p.add_argument("--out", type=Path, default=None, help="markdown output file")
    p.add_argument("--profile", default=None, metavar="TOOL",
                   help="run one napari_reg tool in this process under cProfile and print "
                        "the top entries (no benchmark)")
    p.add_argument("--render", type=Path, default=None,
                   help="only re-render the markdown of an earlier run from its .json")
    args = p.parse_args(argv)
    args.tools = [] if args.tools == "none" else args.tools.split(",")
    unknown = [t for t in args.tools if t not in ALL_TOOLS]
    if unknown:
        p.error(f"unknown tools {unknown}; choose from {ALL_TOOLS}")
    args.scaling = [float(f) for f in args.scaling.split(",") if f.strip()]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render is not None:
        raw = json.loads(args.render.read_text())
        out = args.out or args.render.with_suffix(".md")
        out.write_text(render_markdown(raw))
        print(f"wrote {out}")
        return 0
    peers.set_threads()
    if args.profile:
        return profile(args.profile, dp.make_case(seed=args.seed, step=args.step,
                                                  max_mm=args.max_mm))
    info = machine_info()
    info["git"] = _git_state()
    out = args.out or HERE / "results" / f"deformable_{dt.date.today().isoformat()}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"# deformable benchmark {info['date']} on {info['nproc']} x {info['cpu']}, "
          f"load {info['loadavg_start']}", flush=True)
    t_all = time.perf_counter()
    case = dp.make_case(seed=args.seed, step=args.step, max_mm=args.max_mm)
    identity = dp.evaluate(case, np.zeros_like(case.u_true))
    truth = dp.evaluate(case, case.u_true)
    info["case"] = {"name": case.name, "shape": list(case.fixed.shape),
                    "max_mm": case.max_mm, "mask_voxels": int(case.mask.sum()),
                    "inverse_residual_mm": case.inverse_residual_mm,
                    "build_s": time.perf_counter() - t_all,
                    "identity": identity, "truth": truth}
    print(f"case {case.name}: max {case.max_mm:.2f} mm, identity error "
          f"{identity['err_mean_mm']:.3f} mm, truth min J {truth['jac_min_grid']:.3f}, "
          f"inverse residual {case.inverse_residual_mm:.1e} mm", flush=True)
    raw = {"machine": info, "args": {k: (str(v) if isinstance(v, Path) else v)
                                     for k, v in vars(args).items()},
           "runs": [], "scaling": []}

    def save() -> None:  # after every run: a killed run keeps what it measured
        info["loadavg_end"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
        info["total_s"] = time.perf_counter() - t_all
        out.with_suffix(".json").write_text(json.dumps(raw, indent=1, default=str))
        out.write_text(render_markdown(raw))

    with tempfile.TemporaryDirectory(prefix="bench_deformable_") as tmp:
        for tool in args.tools:
            raw["runs"].append(run_tool(tool, case, tmp))
            save()
        for factor in args.scaling:
            scaled = case if factor == 1 else dp.resample_case(case, factor)
            print(f"scaling x{factor:g}: grid {scaled.fixed.shape}", flush=True)
            for tool in OURS_SCALING:
                done = [r for r in raw["runs"] if r["tool"] == tool and "error" not in r]
                res = dict(done[0]) if factor == 1 and done else run_tool(tool, scaled, tmp)
                res["factor"] = factor
                raw["scaling"].append(res)
                save()
    save()
    print(f"wrote {out} and {out.with_suffix('.json').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
