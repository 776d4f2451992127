"""Motion-correction benchmark: ``napari-reg motion`` against ANTsPy ``motion_correction``.

Usage (repository root, in the peers' venv, with this checkout first on the path)::

    PYTHONPATH=$PWD/src /work/benchvenv/bin/python benchmarks/bench_motion.py
        [--frames 16] [--step 2] [--seed 20261202] [--workers 2] [--out FILE]

Series, all run side by side in one invocation:

* ``synthetic``: the MNI152 T1 resampled onto a ``step`` mm grid under known per-frame
  rigid motion (a slow random walk plus two jerks, up to 3 degrees and 4 mm), Gaussian
  noise (2 %) and a slow multiplicative intensity drift (+8 % over the run, with a spatial
  gradient) (benchmarks/motion_series.py). Reference: the first frame (at rest), for both
  tools. Error of a frame = mean over the brain voxels x of ``|T_est(x) - T_true(x)|``
  (mm), T mapping reference world points to frame world points.
* ``example4d`` and ``functional``: the real 4D files nibabel ships (oblique 2 x 2 x 2.2 mm
  with 2 frames; 4 x 4 x 8 mm EPI with 3 slices and 20 frames), for stability: both tools
  must finish; reported are the framewise displacement (Power et al. 2012) each tool's
  maps imply and the mean distance between the two tools' maps over the head.

Each tool runs in its own child process (``--child``) and is timed there end to end: read
the series file, register every frame, write the corrected series (``.nii.gz``). Peak
memory is the largest summed resident set size of the child and all its descendants
(our worker processes included), sampled every 20 ms by the parent. Both tools get the
machine's 2 cores: ``--workers 2`` processes for napari-reg, 2 ITK threads for ANTs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

FD_RADIUS_MM = 50.0


# ---------------------------------------------------------------- children
def _child_napari(series: str, workdir: str, workers: int) -> dict:
    from napari_reg.core.motion import MotionSettings
    from napari_reg.motion import run_motion

    t0 = time.perf_counter()
    # The default runner: CPU-count processes (2 here, = --workers), or this process for
    # a series under SMALL_SERIES_VOXELS, where spawning workers costs more than it saves.
    report = run_motion(series, Path(workdir) / "out", MotionSettings(reference="first"),
                        workers=None if workers == os.cpu_count() else workers)
    seconds = time.perf_counter() - t0
    if not report.ok:
        raise RuntimeError(f"run failed: {[o.message for o in report.outcomes if o.message]}")
    record = json.loads((report.output_dir / "run.json").read_text())
    return {"seconds": seconds, "runner": report.runner,
            "matrices": [f["matrix_ras_reference_to_frame"] for f in record["frames"]]}


def _child_ants(series: str, workdir: str, workers: int) -> dict:
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(workers)
    import ants

    from napari_reg.io.transform_files import read_transform

    t0 = time.perf_counter()
    image = ants.image_read(series)
    fixed = ants.slice_image(image, axis=3, idx=0)
    result = ants.motion_correction(image, fixed=fixed)
    matrices = []
    for transforms in result["motion_parameters"]:
        if transforms == "NA":
            raise RuntimeError("ANTs skipped a constant frame")
        # ANTs' forward transforms map fixed (reference) points to moving (frame) points
        matrices.append(np.asarray(read_transform(transforms[0])).tolist())
    ants.image_write(result["motion_corrected"], str(Path(workdir) / "corrected.nii.gz"))
    return {"seconds": time.perf_counter() - t0, "runner": f"{workers} ITK threads",
            "matrices": matrices}


def child_main(tool: str, series: str, out: str, workers: int) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        try:
            fn = _child_napari if tool == "napari_reg" else _child_ants
            result = fn(series, workdir, workers)
        except Exception as exc:  # noqa: BLE001 - the row reports the failure
            result = {"error": f"{type(exc).__name__}: {exc}"}
    Path(out).write_text(json.dumps(result))


# ---------------------------------------------------------------- parent
def _tree_rss_bytes(pid: int) -> int:
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total


def run_child(tool: str, series: Path, workers: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        env = {**os.environ, "OMP_NUM_THREADS": str(workers),
               "OPENBLAS_NUM_THREADS": "1" if tool == "napari_reg" else str(workers)}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", tool,
               "--series", str(series), "--child-out", str(out), "--workers", str(workers)]
        child = subprocess.Popen(cmd, env=env, cwd=tmp)
        peak = [0]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], _tree_rss_bytes(child.pid))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        child.wait()
        done.set()
        sampler.join()
        if not out.is_file():
            return {"error": f"child exited with {child.returncode}"}
        result = json.loads(out.read_text())
        result["peak_rss_mb"] = peak[0] / 2**20
        return result


def motion_params(matrix: np.ndarray, center: np.ndarray) -> np.ndarray:
    """Rotations (degrees, R = Rz Ry Rx) and the centre's displacement (mm)."""
    u, _, vt = np.linalg.svd(matrix[:3, :3])
    r = u @ vt
    ay = np.arctan2(-r[2, 0], np.hypot(r[0, 0], r[1, 0]))
    ax, az = np.arctan2(r[2, 1], r[2, 2]), np.arctan2(r[1, 0], r[0, 0])
    return np.r_[np.rad2deg([ax, ay, az]), matrix[:3, :3] @ center + matrix[:3, 3] - center]


def framewise_displacement(matrices: np.ndarray, center: np.ndarray) -> np.ndarray:
    p = np.stack([motion_params(m, center) for m in matrices])
    steps = np.abs(np.diff(p, axis=0))
    return np.r_[0.0, np.deg2rad(steps[:, :3]).sum(1) * FD_RADIUS_MM + steps[:, 3:].sum(1)]


def map_distance(a: np.ndarray, b: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Per frame: mean over ``points`` of |A(x) - B(x)| (mm)."""
    return np.array([np.linalg.norm(points @ (x - y)[:3, :3].T + (x - y)[:3, 3], axis=1).mean()
                     for x, y in zip(a, b, strict=True)])


def head_points(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """World points of the voxels above 20 % of the first frame's robust maximum, and
    their centre (the grid centre stands in for it in the FD)."""
    img = nib.load(str(path))
    first = np.asarray(img.dataobj[..., 0], dtype=np.float32)
    ijk = np.argwhere(first > 0.2 * np.percentile(first, 99))
    pts = ijk @ img.affine[:3, :3].T + img.affine[:3, 3]
    center = img.affine[:3, :3] @ ((np.asarray(first.shape) - 1) / 2) + img.affine[:3, 3]
    return pts, center


def build_series(args, folder: Path) -> dict[str, dict]:
    from motion_series import make_series

    series = make_series(args.frames, args.step, args.seed)
    synthetic = folder / "synthetic.nii.gz"
    img = nib.Nifti1Image(series.data, series.affine)
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = series.tr
    nib.save(img, str(synthetic))
    data = Path(nib.__file__).parent / "tests" / "data"
    return {"synthetic": {"path": synthetic, "series": series},
            "example4d": {"path": data / "example4d.nii.gz"},
            "functional": {"path": data / "functional.nii"}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--step", type=int, default=2, help="grid spacing of the synthetic series")
    p.add_argument("--seed", type=int, default=20261202)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--series", nargs="*", default=["synthetic", "example4d", "functional"])
    p.add_argument("--tools", default="napari_reg,ants")
    p.add_argument("--out", help="JSON results file (a .md table is written beside it)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child_main(args.child, args.series[0], args.child_out, args.workers)
        return 0
    tools = args.tools.split(",")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        all_series = build_series(args, Path(tmp))
        for name in args.series:
            entry = all_series[name]
            results = {}
            for tool in tools:
                print(f"{name}: {tool} ...", file=sys.stderr, flush=True)
                results[tool] = run_child(tool, entry["path"], args.workers)
            rows.append(summarise(name, entry, results, tools))
            print(json.dumps(rows[-1], indent=1), file=sys.stderr, flush=True)
    report = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": {"nproc": os.cpu_count(), "platform": platform.platform(),
                          "load_before": os.getloadavg()},
              "settings": vars(args), "rows": rows}
    text = markdown(report)
    print(text)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
        Path(args.out).with_suffix(".md").write_text(text)
    return 0


def summarise(name: str, entry: dict, results: dict, tools: list[str]) -> dict:
    row: dict = {"series": name, "tools": {}}
    img = nib.load(str(entry["path"]))
    row["shape"] = list(img.shape)
    if "series" in entry:
        points = entry["series"].mask_points()
        center = points.mean(axis=0)
    else:
        points, center = head_points(entry["path"])
    for tool in tools:
        r = results[tool]
        out = {k: r[k] for k in ("seconds", "peak_rss_mb", "runner", "error") if k in r}
        if "matrices" in r:
            m = np.asarray(r["matrices"])
            out["mean_fd_mm"] = float(framewise_displacement(m, center).mean())
            if "series" in entry:
                errors = map_distance(m, entry["series"].motion, points)
                out["error_mean_mm"] = float(errors[1:].mean())  # frame 0 is the reference
                out["error_max_mm"] = float(errors.max())
                out["errors_per_frame_mm"] = [round(float(e), 5) for e in errors]
        row["tools"][tool] = out
    if all("matrices" in results[t] for t in tools) and len(tools) == 2:
        a, b = (np.asarray(results[t]["matrices"]) for t in tools)
        row["tools_disagree_mean_mm"] = float(map_distance(a, b, points).mean())
    if "ants" in row["tools"] and "napari_reg" in row["tools"]:
        ours, peer = row["tools"]["napari_reg"], row["tools"]["ants"]
        row["ratios_to_ants"] = {
            k: ours[k] / peer[k] for k in ("seconds", "peak_rss_mb", "error_mean_mm")
            if k in ours and k in peer and peer[k]}
    return row


def markdown(report: dict) -> str:
    lines = [f"# Motion correction, {report['date']}", "",
             f"machine: {report['machine']['nproc']} cores, load before "
             f"{', '.join(f'{x:.1f}' for x in report['machine']['load_before'])}; "
             f"settings: {report['settings']['frames']} frames at {report['settings']['step']} "
             f"mm, seed {report['settings']['seed']}, {report['settings']['workers']} workers",
             "", "| series | tool | error mean (mm) | error max (mm) | mean FD (mm) | time (s) "
             "| peak RSS (MB) | x ANTs: error / time / memory |",
             "|---|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        for tool, r in row["tools"].items():
            if "error" in r:
                lines.append(f"| {row['series']} | {tool} | failed: {r['error']} |||||")
                continue
            ratios = row.get("ratios_to_ants", {}) if tool == "napari_reg" else {}
            ratio = " / ".join(f"{ratios[k]:.2f}" if k in ratios else "-"
                               for k in ("error_mean_mm", "seconds", "peak_rss_mb"))
            err = (f"{r['error_mean_mm']:.4f} | {r['error_max_mm']:.4f}"
                   if "error_mean_mm" in r else "- | -")
            lines.append(f"| {row['series']} | {tool} | {err} | {r['mean_fd_mm']:.3f} | "
                         f"{r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | "
                         f"{ratio if tool == 'napari_reg' else ''} |")
        if "tools_disagree_mean_mm" in row:
            lines.append(f"| {row['series']} | (napari-reg vs ANTs maps) | "
                         f"{row['tools_disagree_mean_mm']:.4f} mean distance ||||||")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
