"""Real-anatomy deformable benchmark (issue 12): napari_reg vs greedy, ANTs SyN, elastix.

Usage (from the repository root, in the peers' venv, see benchmarks/README.md)::

    PYTHONPATH=src /work/benchvenv/bin/python benchmarks/bench_real.py
        [--which 2d,3d] [--all-2d] [--spacing 2] [--tools a,b,...] [--no-sample]
    PYTHONPATH=src /work/benchvenv/bin/python benchmarks/bench_real.py --render results/X.json

Pairs (real_pairs.py): three 2D T1 slices of different subjects registered to each other,
and Colin27 registered to the ICBM 2009a T1 at ``--spacing`` mm. No ground truth: each
tool's whole fixed->moving map is scored by the overlap of 3-class tissue labels (Dice
per class, moving labels warped nearest-neighbour by the tool's own map), NCC inside the
fixed brain, the Jacobian determinant of the map (minimum, folded fraction) and the
registration time. Ratios are to greedy in the same run.

The "do no harm" row (``--no-sample`` skips it): the shipped sample pair
(src/napari_reg/data: T1 vs a T2-like contrast under a known affine), where the truth is
affine, so a deformable stage can only add error: mean |T_est(x) - T_true(x)| over the
fixed brain and over the whole fixed grid, for the affine and the deformable presets.

Each tool runs in a fresh spawned child with 2 threads; time / CPU / peak RSS cover the
registration call only, the export of the dense map is timed apart (as bench_deformable).
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

import peers  # noqa: E402
import real_pairs as rp  # noqa: E402
import real_peers  # noqa: E402
from bench_affine import _reset_peak, _status_kib, machine_info  # noqa: E402
from bench_deformable import _git_state  # noqa: E402
from real_report import render_markdown  # noqa: E402

ALL_TOOLS = list(real_peers.REAL_TOOLS)
DEFAULT_TOOLS = ["napari_reg_affine", "napari_reg_bspline", "napari_reg_syn", "greedy",
                 "ants", "elastix"]
SAMPLE_TOOLS = ["napari_reg_affine", "napari_reg_bspline", "napari_reg_syn", "greedy_affine",
                "greedy"]
CHILD_TIMEOUT_S = 1800.0
SAMPLE_DIR = HERE.parent / "src" / "napari_reg" / "data"


# ---------------------------------------------------------------- child process
def _child(tool: str, pair_file: str, field_file: str, queue: mp.Queue) -> None:
    peers.set_threads()
    os.environ.update(real_peers.REAL_ENV.get(tool, {}))
    os.chdir(os.path.dirname(os.path.abspath(pair_file)))  # tools' stray files stay in tmp
    # the peers' C++ logs (greedy's optimiser traces) would drown the parent's table
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    out: dict = {"tool": tool}
    try:
        t0 = time.perf_counter()
        try:
            scope: dict = {}
            exec(real_peers.REAL_WARM[tool], scope)  # noqa: S102 - fixed strings
        except ImportError as exc:
            out["error"] = f"not available ({type(exc).__name__}: {exc})"
            queue.put(out)
            return
        out["version"] = str(getattr(scope["m"], "__version__", "?"))
        out["import_s"] = time.perf_counter() - t0
        with np.load(pair_file) as z:
            args = (z["fixed"], z["fixed_affine"], z["moving"], z["moving_affine"])
        rss_before = _status_kib("VmRSS")
        out["peak_reset"] = _reset_peak()
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        export = real_peers.REAL_TOOLS[tool](*args)
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


def run_isolated(tool: str, pair_file: str, field_file: str,
                 timeout: float = CHILD_TIMEOUT_S) -> dict:
    """One tool on one pair in a fresh spawned process; never raises."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_child, args=(tool, pair_file, field_file, q))
    t0 = time.perf_counter()
    proc.start()
    result = None
    while result is None and time.perf_counter() - t0 < timeout:
        try:
            result = q.get(timeout=2.0)
        except queue_mod.Empty:
            if not proc.is_alive():
                break
    if result is None:
        proc.join(timeout=5)
        result = {"tool": tool, "error": (f"no result within {timeout:.0f} s"
                                          if proc.is_alive()
                                          else f"child died with exit code {proc.exitcode}")}
    proc.join(timeout=30)
    if proc.is_alive():
        proc.terminate()
        proc.join()
    result["process_s"] = time.perf_counter() - t0
    return result


def _save_pair(path: str, fixed, fixed_affine, moving, moving_affine) -> None:
    np.savez(path, fixed=fixed, fixed_affine=fixed_affine, moving=moving,
             moving_affine=moving_affine)


def _run(tool: str, pair_file: str, tmp: str, name: str, scorer) -> dict:
    field_file = os.path.join(tmp, f"{name.replace('>', '')}-{tool}.npy")
    res = run_isolated(tool, pair_file, field_file)
    res.update(pair=name, loadavg=" ".join(f"{v:.2f}" for v in os.getloadavg()))
    if "field_file" in res:
        res.update(scorer(np.load(res.pop("field_file"))))
        os.remove(field_file)
        shown = {k: v for k, v in res.items() if k in (
            "dice_mean", "ncc_brain", "jac_min", "folded_brain", "err_brain_mm",
            "err_grid_mm")}
        print(f"  {tool:24s} {res['time_s']:7.1f} s  " + "  ".join(
            f"{k} {v:.4g}" for k, v in shown.items()), flush=True)
    else:
        print(f"  {tool:24s} {res.get('error')}", flush=True)
        if "traceback" in res:
            print(res["traceback"], file=sys.stderr, flush=True)
    return res


# ---------------------------------------------------------------- the sample pair
def sample_pair() -> tuple[np.ndarray, ...]:
    """The shipped pair (fixed T1, moving T2-like) and its true fixed->moving matrix."""
    import nibabel as nib

    f = nib.load(str(SAMPLE_DIR / "mni_t1_fixed.nii.gz"))
    m = nib.load(str(SAMPLE_DIR / "mni_t2like_moving.nii.gz"))
    truth = np.loadtxt(SAMPLE_DIR / "ground_truth_fixed_to_moving.txt")
    return (np.asarray(f.get_fdata(), np.float32), f.affine, np.asarray(m.get_fdata(),
            np.float32), m.affine, truth)


def truth_scorer(fixed: np.ndarray, fixed_affine: np.ndarray, truth: np.ndarray):
    """Errors of a map against an affine truth: mean |T_est - T_true| (mm) over the fixed
    brain and the whole fixed grid, and the folded fraction of the grid."""
    x = rp.world_grid(fixed.shape, fixed_affine)
    u_true = np.tensordot(truth[:3, :3], x, axes=1) + truth[:3, 3].reshape(3, 1, 1, 1) - x
    brain = rp.brain_mask(fixed)

    def scorer(u: np.ndarray) -> dict[str, float]:
        known = np.all(np.isfinite(u), axis=0)
        err = np.sqrt(((np.where(known, u, 0.0) - u_true) ** 2).sum(axis=0))
        det = rp.jacobian_det(np.where(known, u, 0.0), fixed_affine)
        return {"err_brain_mm": float(err[brain & known].mean()),
                "err_grid_mm": float(err[known].mean()),
                "err_brain_max_mm": float(err[brain & known].max()),
                "jac_min": float(det[known].min()), "jac_max": float(det[known].max()),
                "folded_grid": float(np.count_nonzero(det[known] <= 0) / known.sum())}

    return scorer


# ---------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--which", default="2d,3d",
                   help="comma list of '2d', '3d' (Colin27 -> ICBM T1), '3d-t2' (Colin27 -> "
                        "a T2-like ICBM: multi-modal); default '2d,3d'")
    p.add_argument("--all-2d", action="store_true",
                   help="all 6 ordered slice pairs (default: 3, each slice fixed once)")
    p.add_argument("--spacing", type=float, default=2.0, help="3D grid spacing, mm")
    p.add_argument("--tools", default=",".join(DEFAULT_TOOLS),
                   help=f"comma list from {','.join(ALL_TOOLS)}")
    p.add_argument("--sample-tools", default=",".join(SAMPLE_TOOLS),
                   help="tools for the sample-pair row ('' to skip it)")
    p.add_argument("--no-sample", action="store_true", help="skip the sample-pair row")
    p.add_argument("--out", type=Path, default=None, help="markdown output file")
    p.add_argument("--render", type=Path, default=None,
                   help="only re-render the markdown of an earlier run from its .json")
    args = p.parse_args(argv)
    args.tools = [t for t in args.tools.split(",") if t]
    args.sample_tools = [] if args.no_sample else [t for t in args.sample_tools.split(",") if t]
    unknown = [t for t in args.tools + args.sample_tools if t not in ALL_TOOLS]
    if unknown:
        p.error(f"unknown tools {unknown}; choose from {ALL_TOOLS}")
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
    info = machine_info()
    info["git"] = _git_state()
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d_%H%M")
    out = args.out or HERE / "results" / f"real_{stamp}.md"
    n = 2
    while args.out is None and (out.exists() or out.with_suffix(".json").exists()):
        out = HERE / "results" / f"real_{stamp}_{n}.md"  # two runs started in one minute
        n += 1
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"# real-anatomy benchmark {info['date']}, load {info['loadavg_start']}", flush=True)
    t_all = time.perf_counter()
    pairs = rp.load_pairs(args.which, args.spacing, args.all_2d)
    raw = {"machine": info, "args": {k: (str(v) if isinstance(v, Path) else v)
                                     for k, v in vars(args).items()},
           "pairs": [], "runs": [], "sample": []}

    def save() -> None:  # after every run: an interrupted run keeps what it measured
        info["loadavg_end"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
        info["total_s"] = time.perf_counter() - t_all
        out.with_suffix(".json").write_text(json.dumps(raw, indent=1, default=str))
        out.write_text(render_markdown(raw))

    with tempfile.TemporaryDirectory(prefix="bench_real_") as tmp:
        for pair in pairs:
            pair_file = os.path.join(tmp, f"{pair.name.replace('>', '')}.npz")
            _save_pair(pair_file, pair.fixed, pair.fixed_affine, pair.moving,
                       pair.moving_affine)
            raw["pairs"].append({
                "name": pair.name, "fixed_shape": list(pair.fixed.shape),
                "moving_shape": list(pair.moving.shape),
                "spacing_mm": float(np.linalg.norm(pair.fixed_affine[:-1, :-1], axis=0)[0]),
                "fixed_brain_voxels": int(pair.fixed_mask.sum()),
                "class_voxels_fixed": [int((pair.fixed_labels == c).sum()) for c in (1, 2, 3)]})
            print(f"{pair.name}: fixed {pair.fixed.shape}, moving {pair.moving.shape}",
                  flush=True)
            for tool in args.tools:
                raw["runs"].append(_run(tool, pair_file, tmp, pair.name,
                                        lambda u, pair=pair: rp.score(pair, u)))
                save()
        if args.sample_tools:
            fixed, fa, moving, ma, truth = sample_pair()
            pair_file = os.path.join(tmp, "sample.npz")
            _save_pair(pair_file, fixed, fa, moving, ma)
            scorer = truth_scorer(fixed, fa, truth)
            print(f"sample pair: fixed {fixed.shape}, moving {moving.shape}", flush=True)
            raw["sample_identity"] = scorer(np.zeros((3, *fixed.shape), np.float32))
            for tool in args.sample_tools:
                raw["sample"].append(_run(tool, pair_file, tmp, "sample", scorer))
                save()
    save()
    print(f"wrote {out} and {out.with_suffix('.json').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
