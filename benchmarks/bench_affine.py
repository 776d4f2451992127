"""Affine benchmark: napari_reg against elastix, ANTsPy, DIPY, SimpleITK and greedy in one run.

Usage (from the repository root, in the peers' venv, see benchmarks/README.md)::

    /work/benchvenv/bin/python benchmarks/bench_affine.py [--pairs N] [--quick]
        [--tools napari_reg,elastix,...] [--seed S] [--out FILE]

For every held-out pair (benchmarks/pairs.py: MNI152 T1 vs itself or a T2-like contrast,
the latter also under a smooth +-10 % bias field, moved by a known random affine) every
tool runs in its own fresh child process (multiprocessing "spawn"), so that one tool's
libraries, threads and heap cannot affect another's numbers. In the child:

* the tool's modules are imported and the pair is loaded first (not timed; the import
  time is reported separately);
* wall time = ``time.perf_counter()`` around the tool's call (building its image
  objects from numpy, registering, reading the transform back); CPU time (user + system,
  all threads, ``getrusage``) over the same call is reported too, as it depends less on
  what else the shared machine is running;
* peak memory = the kernel's peak resident set size (``VmHWM`` in /proc/self/status),
  reset just before the call by writing ``5`` to /proc/self/clear_refs: it counts C++
  and numpy allocations alike (tracemalloc would miss C++). "peak RSS" is the whole
  process during the call (interpreter + libraries + the input arrays); "delta" is that
  peak minus the RSS just before the call, i.e. what the registration itself added;
* 2 threads for every tool (ITK, OpenMP and BLAS pools), fair on a 2-core machine.

TRE = mean (and max) over the brain-mask voxels of ``|T_est(x) - T_true(x)|`` in mm, with
``T`` mapping fixed world RAS mm to moving world RAS mm. A tool that fails or cannot be
imported gets its error in its row, never a number.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import json
import multiprocessing as mp
import os
import platform
import resource
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import pairs as pairs_mod  # noqa: E402
import peers  # noqa: E402

# Modules a tool needs, imported in the child before the timer starts; the attribute
# accesses force ITK's lazy loader to load elastix's wrapping now rather than mid-run.
WARM = {
    "napari_reg": "from napari_reg import register; import napari_reg as m",
    "elastix": "import itk; itk.ParameterObject; itk.elastix_registration_method; import itk as m",
    "ants": "import ants as m",
    "dipy": "import dipy.align.imaffine, dipy.align.transforms; import dipy as m",
    "simpleitk": "import SimpleITK as m",
    "greedy": "import SimpleITK, picsl_greedy; import picsl_greedy as m",
}
ALL_TOOLS = ["napari_reg", "elastix", "ants", "dipy", "simpleitk", "greedy"]
# DIPY's tutorial pipeline takes ~150-300 s per 1 mm pair on 2 cores: opt-in
# (--tools all) so that the default run stays near 10 minutes.
DEFAULT_TOOLS = ["napari_reg", "elastix", "ants", "simpleitk", "greedy"]
QUICK_TOOLS = ["napari_reg", "elastix", "simpleitk", "greedy"]
CHILD_TIMEOUT_S = 1200.0


# ---------------------------------------------------------------- child process
def _status_kib(key: str) -> int | None:
    """A ``Vm*`` line of /proc/self/status in KiB (None off Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter (Linux >= 4.0); False if not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _child(tool: str, pair_file: str, queue: mp.Queue) -> None:
    """Run ``tool`` on one saved pair and put a result dict on ``queue``."""
    peers.set_threads()
    # the peers' C++ logs (greedy's optimiser traces) would drown the parent's table
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    out: dict = {"tool": tool}
    try:
        t0 = time.perf_counter()
        try:
            scope: dict = {}
            exec(WARM[tool], scope)  # noqa: S102 - fixed strings from WARM above
        except ImportError as exc:
            out["error"] = f"not available ({type(exc).__name__}: {exc})"
            queue.put(out)
            return
        out["version"] = str(getattr(scope["m"], "__version__", "?"))
        out["import_s"] = time.perf_counter() - t0
        with np.load(pair_file) as z:
            args = [z["fixed"], z["fixed_affine"], z["moving"], z["moving_affine"]]
        rss_before = _status_kib("VmRSS")
        out["peak_reset"] = _reset_peak()
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        matrix = peers.TOOLS[tool](*args)
        out["time_s"] = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        # CPU seconds of all threads: less sensitive than wall time to a busy machine.
        out["cpu_s"] = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        peak = _status_kib("VmHWM")
        out["peak_rss_mib"] = peak / 1024 if peak else None
        out["delta_rss_mib"] = (peak - rss_before) / 1024 if peak and rss_before else None
        out["matrix"] = np.asarray(matrix, dtype=np.float64).tolist()
    except Exception as exc:  # report any tool failure in its row
        out["error"] = f"{type(exc).__name__}: {exc}"
        out["traceback"] = traceback.format_exc()
    queue.put(out)


def run_isolated(tool: str, pair_file: str, timeout: float = CHILD_TIMEOUT_S) -> dict:
    """Run one tool on one pair in a fresh spawned process; never raises."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(tool, pair_file, queue))
    t0 = time.perf_counter()
    proc.start()
    try:
        result = queue.get(timeout=timeout)
    except Exception:
        result = {"tool": tool, "error": f"no result within {timeout:.0f} s (exit {proc.exitcode})"}
    proc.join(timeout=30)
    if proc.is_alive():
        proc.terminate()
        proc.join()
    if proc.exitcode not in (0, None) and "error" not in result:
        result["error"] = f"child exited with code {proc.exitcode}"
    result["process_s"] = time.perf_counter() - t0
    return result


# ---------------------------------------------------------------- machine info
def machine_info() -> dict:
    """nproc, CPU model, memory and load: the context every number needs."""
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024**2:.1f} GiB"
    except OSError:
        pass
    affinity = getattr(os, "sched_getaffinity", None)
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": len(affinity(0)) if affinity else os.cpu_count(),
        "cpu": cpu,
        "memory": mem,
        "loadavg_start": " ".join(f"{v:.2f}" for v in os.getloadavg()),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


# ---------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=None, help="pairs per modality (default 2)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="1 pair per modality and the fast tools only (" + ", ".join(QUICK_TOOLS) + ")",
    )
    p.add_argument(
        "--tools",
        default=None,
        help="'all' or a comma list from "
        + ",".join(ALL_TOOLS)
        + " (default: "
        + ",".join(DEFAULT_TOOLS)
        + ")",
    )
    p.add_argument(
        "--modalities",
        default=",".join(pairs_mod.MODALITIES),
        help="comma list from " + ",".join(pairs_mod.MODALITIES) + " (default: all; "
        "T1-T2like+bias is the held-out-like case: a +-10 %% bias field on the moving image)",
    )
    p.add_argument("--seed", type=int, default=20261124, help="RNG seed of the pairs")
    p.add_argument("--out", type=Path, default=None, help="markdown output file")
    p.add_argument(
        "--render",
        type=Path,
        default=None,
        help="only re-render the markdown of an earlier run from its .json (no registration)",
    )
    args = p.parse_args(argv)
    if args.pairs is None:
        args.pairs = 1 if args.quick else 2
    if args.pairs < 1:
        p.error("--pairs must be >= 1")
    if args.tools == "all":
        tools = ALL_TOOLS
    elif args.tools:
        tools = args.tools.split(",")
    else:
        tools = QUICK_TOOLS if args.quick else DEFAULT_TOOLS
    unknown = [t for t in tools if t not in ALL_TOOLS]
    if unknown:
        p.error(f"unknown tools {unknown}; choose from {ALL_TOOLS}")
    args.tools = tools
    modalities = tuple(args.modalities.split(","))
    bad = [m for m in modalities if m not in pairs_mod.MODALITIES]
    if bad:
        p.error(f"unknown modalities {bad}; choose from {list(pairs_mod.MODALITIES)}")
    args.modalities = modalities
    return args


def main(argv: list[str] | None = None) -> int:
    from report import render_markdown  # local module, see report.py

    args = parse_args(argv)
    if args.render is not None:
        raw = json.loads(args.render.read_text())
        run_args = raw["args"]
        if isinstance(run_args.get("tools"), str):  # older files stored str(list)
            run_args["tools"] = ast.literal_eval(run_args["tools"])
        out = args.out or args.render.with_suffix(".md")
        out.write_text(render_markdown(raw["runs"], raw["machine"], run_args))
        print(f"wrote {out}")
        return 0
    peers.set_threads()
    info = machine_info()
    print(f"# affine benchmark {info['date']} on {info['nproc']} x {info['cpu']}", flush=True)
    t0 = time.perf_counter()
    pairs = pairs_mod.make_pairs(args.pairs, seed=args.seed, modalities=args.modalities)
    print(f"built {len(pairs)} pairs in {time.perf_counter() - t0:.1f} s", flush=True)
    records = []
    with tempfile.TemporaryDirectory(prefix="bench_affine_") as tmp:
        for pair in pairs:
            pair_file = os.path.join(tmp, f"{pair.name}.npz")
            np.savez(
                pair_file,
                fixed=pair.fixed,
                fixed_affine=pair.fixed_affine,
                moving=pair.moving,
                moving_affine=pair.moving_affine,
            )
            init_mean, init_max = pairs_mod.tre(pair, np.eye(4))
            print(f"{pair.name} ({pair.modality}): initial TRE {init_mean:.2f} mm", flush=True)
            for tool in args.tools:
                res = run_isolated(tool, pair_file)
                res.update(pair=pair.name, modality=pair.modality, init_tre_mm=init_mean)
                if "matrix" in res:
                    res["tre_mm"], res["tre_max_mm"] = pairs_mod.tre(pair, np.array(res["matrix"]))
                    print(
                        f"  {tool:10s} {res['time_s']:7.2f} s (cpu {res['cpu_s']:6.1f} s)"
                        f"  peak {res['peak_rss_mib']:7.0f} MiB"
                        f"  TRE {res['tre_mm']:.3f} mm (max {res['tre_max_mm']:.3f})",
                        flush=True,
                    )
                else:
                    print(f"  {tool:10s} {res['error']}", flush=True)
                    if "traceback" in res:
                        print(res["traceback"], file=sys.stderr, flush=True)
                records.append(res)
    info["loadavg_end"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    info["total_s"] = time.perf_counter() - t0
    text = render_markdown(records, info, vars(args))
    print()
    print(text)
    out = args.out or HERE / "results" / f"affine_{dt.date.today().isoformat()}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    raw = {"machine": info, "args": vars(args), "runs": records}
    out.with_suffix(".json").write_text(json.dumps(raw, indent=1, default=str))
    print(f"wrote {out} and {out.with_suffix('.json').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
