"""Multi-atlas segmentation accuracy and batch throughput on the MNI152 template.

Part 1, multi-atlas Dice. From nilearn's MNI152 2009a T1 and its GM/WM maps (a CSF map is
derived: inside the hole-filled, dilated brain where GM + WM < 0.5), a label map
(1 CSF, 2 GM, 3 WM by largest probability) is made. The subject and every atlas are the
template pulled through their own known map ``x -> A_k x + u_k(x)`` (world mm): a random
affine within the GUIDE bounds and a smooth random displacement (max ``--warp-mm``), the
labels through the same map (nearest). Each atlas is registered to the subject (affine,
MI, defaults: the deformation stays), its labels propagated, and the propagated maps fused;
Dice per label against the subject's true labels. Reported: each single atlas, majority
vote, locally weighted voting (LNCC and LSSD), and nearest vs linear propagation.

Part 2, batch throughput: ``--pairs`` moving images (the T1 under random affines) to the
fixed T1 through :func:`napari_reg.batch.run_batch` on 1 and 2 local worker processes
and on a Dask ``LocalCluster`` (2 worker processes, 1 thread each); wall time, pairs per
minute, and the mean TRE over the brain of each run's transforms (a correctness check).

    /work/venv/bin/python benchmarks/bench_atlas.py --out benchmarks/results/atlas_<date>.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from napari_reg.batch import plan_pairs, run_batch  # noqa: E402
from napari_reg.core.fusion import fuse_labels, segment_with_atlases  # noqa: E402
from napari_reg.core.image import Volume, apply_affine  # noqa: E402
from napari_reg.core.labels import Atlas, dice_per_label, propagate_labels  # noqa: E402
from napari_reg.io.transform_files import read_itk_transform  # noqa: E402
from napari_reg.io.volumes import save_volume  # noqa: E402
from pairs import brain_mask, load_mni, random_affine  # noqa: E402

LABELS = {1: "CSF", 2: "GM", 3: "WM"}


def tissue_labels(gm: np.ndarray, wm: np.ndarray) -> np.ndarray:
    brain = ndimage.binary_fill_holes(ndimage.binary_dilation(brain_mask(gm, wm), iterations=2))
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0) * brain
    probs = np.stack([np.full_like(gm, 0.5), csf, gm, wm])  # background wins below 0.5
    return np.argmax(probs, axis=0).astype(np.uint8)


def smooth_field(shape: tuple[int, ...], spacing: float, max_mm: float,
                 rng: np.random.Generator) -> np.ndarray:
    """A smooth random displacement (3, *shape) in mm, largest vector ``max_mm``."""
    sigma = 12.0 / spacing  # ~12 mm correlation length: gyral-scale shape differences
    u = np.stack([ndimage.gaussian_filter(rng.normal(size=shape), sigma) for _ in range(3)])
    return (u * max_mm / np.sqrt((u ** 2).sum(axis=0)).max()).astype(np.float32)


def pull(data: np.ndarray, affine: np.ndarray, matrix: np.ndarray, u: np.ndarray,
         order: int) -> np.ndarray:
    """``out(x) = data(matrix x + u(x))`` on the same grid (world mm maps)."""
    grid = Volume(np.zeros(data.shape, np.float32), affine).world_grid()
    world = apply_affine(matrix, grid) + np.moveaxis(u, 0, -1)
    vox = apply_affine(np.linalg.inv(affine), world)
    out = ndimage.map_coordinates(data, np.moveaxis(vox, -1, 0), order=order, mode="constant")
    return out.astype(data.dtype)


def make_subjects(n: int, step: int, warp_mm: float, seed: int):
    t1, gm, wm, affine = load_mni(step)
    labels = tissue_labels(gm, wm)
    rng = np.random.default_rng(seed)
    center = Volume(t1, affine).center_world()
    out = []
    for k in range(n):
        matrix = random_affine(rng, center)
        u = smooth_field(t1.shape, float(step), warp_mm, rng)
        image = Volume(np.clip(pull(t1, affine, matrix, u, 1), 0, None), affine, f"s{k}")
        out.append((image, Volume(pull(labels, affine, matrix, u, 0), affine, f"s{k}_labels")))
    return out


def mean_dice(report: dict[int, float]) -> float:
    return float(np.mean([report[v] for v in LABELS]))


def affine_then_syn(fixed: Volume, moving: Volume, callback=None, cancel=None, **_):
    """Affine (MI) then the symmetric SVF stage of core/syn.py, called directly: what
    ``register(transform="syn")`` will do once the driver chains deformable stages."""
    from napari_reg.core.register import register
    from napari_reg.core.syn import register_syn

    linear = register(fixed, moving, transform="affine", metric="mi", cancel=cancel)
    return register_syn(fixed, moving, linear.matrix, cancel=cancel)


def fusion_rows(result, subject: Volume, truth: Volume, atlases: list[Atlas],
                radius: float, label: str, linear_rows: bool) -> dict:
    rows = {}
    singles = [dice_per_label(lab, truth, list(LABELS)) for lab in result.atlas_labels]
    rows[f"{label}: single atlas (mean of atlases)"] = {
        v: float(np.mean([s[v] for s in singles])) for v in LABELS}
    rows[f"{label}: single atlas (best)"] = max(singles, key=mean_dice)
    rows[f"{label}: majority vote"] = dice_per_label(
        fuse_labels(result.atlas_labels, "majority")[0], truth, list(LABELS))
    for sim in ("lncc", "lssd"):
        fused, _ = fuse_labels(result.atlas_labels, "weighted", subject, result.warped_images,
                               similarity=sim, radius_mm=radius)
        rows[f"{label}: weighted voting ({sim}, {radius:g} mm)"] = dice_per_label(
            fused, truth, list(LABELS))
    if linear_rows:
        linear = [propagate_labels(a.labels, subject, t, "linear", result.values)
                  for a, t in zip(atlases, result.transforms, strict=True)]
        rows[f"{label}: majority vote, linear propagation"] = dice_per_label(
            fuse_labels(linear, "majority")[0], truth, list(LABELS))
        fused, _ = fuse_labels(linear, "weighted", subject, result.warped_images,
                               similarity="lssd", radius_mm=radius)
        rows[f"{label}: weighted (lssd), linear propagation"] = dice_per_label(
            fused, truth, list(LABELS))
    return rows


def part_atlas(args) -> dict:
    people = make_subjects(args.atlases + 1, args.step, args.warp_mm, args.seed)
    (subject, truth), atlases = people[0], [Atlas(im, lab, im.name) for im, lab in people[1:]]
    rows, seconds = {}, {}
    for label, register_fn in (("affine", None), ("affine + SyN", affine_then_syn)):
        t0 = time.perf_counter()
        result = segment_with_atlases(subject, atlases, transform="affine", metric="mi",
                                      fusion="weighted", similarity="lncc",
                                      radius_mm=args.radius, truth=truth,
                                      register_fn=register_fn)
        seconds[label] = time.perf_counter() - t0
        rows.update(fusion_rows(result, subject, truth, atlases, args.radius, label,
                                linear_rows=register_fn is None))
    return {"rows": rows, "seconds": seconds, "n_atlases": len(atlases),
            "shape": list(subject.shape), "spacing_mm": float(subject.spacing[0])}


def part_batch(args) -> dict:
    t1, gm, wm, affine = load_mni(args.batch_step)
    mask = brain_mask(gm, wm)
    rng = np.random.default_rng(args.seed + 1)
    fixed = Volume(t1, affine, "fixed")
    points = fixed.voxel_to_world(np.argwhere(mask).astype(float))
    zero = np.zeros((3,) + t1.shape, np.float32)
    out: dict = {"configs": {}}
    with tempfile.TemporaryDirectory(prefix="bench_atlas_") as tmp:
        tmp = Path(tmp)
        save_volume(fixed, tmp / "fixed.nii.gz")
        truths, movings = [], []
        for k in range(args.pairs):
            m = random_affine(rng, fixed.center_world())
            # moving(y) = t1(m^-1 y): the registration should return m (fixed -> moving)
            moved = pull(t1, affine, np.linalg.inv(m), zero, 1)
            path = tmp / f"moving{k}.nii.gz"
            save_volume(Volume(moved, affine), path)
            truths.append(m)
            movings.append(str(path))
        configs = [("1 local process", {"workers": 1}), ("2 local processes", {"workers": 2}),
                   ("Dask LocalCluster (2 processes x 1 thread)", {"dask": True})]
        for index, (name, how) in enumerate(configs):
            pairs = plan_pairs(tmp / "fixed.nii.gz", movings, tmp / f"run{index}",
                               {"transform": "affine", "metric": "mi"})
            t0 = time.perf_counter()
            if how.get("dask"):
                from distributed import LocalCluster

                with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
                    t0 = time.perf_counter()  # the cluster's start-up is not throughput
                    report = run_batch(pairs, scheduler=cluster.scheduler_address)
            else:
                report = run_batch(pairs, workers=how["workers"])
            wall = time.perf_counter() - t0
            t_resume = time.perf_counter()
            again = run_batch(pairs, workers=0)
            resume = time.perf_counter() - t_resume
            tres = []
            for pair, m in zip(pairs, truths, strict=True):
                est = read_itk_transform(pair.output_dir / "transform.tfm")
                tres.append(float(np.linalg.norm(apply_affine(est, points)
                                                 - apply_affine(m, points), axis=1).mean()))
            out["configs"][name] = {
                "wall_s": wall, "pairs_per_min": 60.0 * len(pairs) / wall,
                "statuses": [o.status for o in report.outcomes],
                "pair_seconds": [o.seconds for o in report.outcomes],
                "pair_cpu_seconds": [o.cpu_seconds for o in report.outcomes],
                "mean_tre_mm": float(np.mean(tres)), "max_tre_mm": float(np.max(tres)),
                "resume_s": resume, "resume_statuses": sorted({o.status for o in again.outcomes}),
            }
    out["shape"], out["n_pairs"] = list(t1.shape), args.pairs
    return out


def render(results: dict) -> str:
    a, b = results["atlas"], results["batch"]
    lines = [f"# Atlas segmentation and batch benchmark ({results['date']})", "",
             f"Machine: {results['machine']}. One run; load average at start "
             f"{results['load_start']:.2f}, at end {results['load_end']:.2f} (the 2 cores are "
             "shared with other engineers' jobs, so times are noisy).", "",
             "## Multi-atlas Dice (MNI152 T1 + GM/WM (+ derived CSF) labels)", "",
             f"Subject and {a['n_atlases']} atlases: the template under its own random affine "
             f"(GUIDE bounds) and smooth random warp (max {results['args']['warp_mm']} mm, "
             f"~12 mm correlation), {a['spacing_mm']:g} mm grid {tuple(a['shape'])}. Every "
             "atlas registered to the subject: affine (MI, defaults), or affine then the SyN "
             "stage of `core/syn.py` (defaults, called directly until `register()` chains it). "
             "Registration + propagation + weighted fusion of all atlases took "
             + ", ".join(f"{v:.1f} s ({k})" for k, v in a["seconds"].items()) + ".", "",
             "| method | CSF | GM | WM | mean |", "|---|---|---|---|---|"]
    for name, row in a["rows"].items():
        lines.append(f"| {name} | " + " | ".join(f"{row[v]:.3f}" for v in LABELS)
                     + f" | {mean_dice(row):.3f} |")
    lines += ["", "## Batch throughput", "",
              f"{b['n_pairs']} pairs (T1 at {results['args']['batch_step']} mm, "
              f"{tuple(b['shape'])}, "
              "under random affines) registered to the T1 with `napari-reg batch` defaults "
              "(affine, MI). Resume = running the same batch again (every pair already done).",
              "Wall s includes starting the worker processes (not the Dask cluster's start-up); "
              "per pair: wall and CPU seconds inside the worker.",
              "", "| runner | wall s | pairs/min | s per pair (wall / CPU) | mean TRE mm "
              "| max TRE mm | resume s |", "|---|---|---|---|---|---|---|"]
    for name, c in b["configs"].items():
        lines.append(f"| {name} | {c['wall_s']:.1f} | {c['pairs_per_min']:.1f} | "
                     f"{np.mean(c['pair_seconds']):.1f} / {np.mean(c['pair_cpu_seconds']):.1f} | "
                     f"{c['mean_tre_mm']:.3f} | {c['max_tre_mm']:.3f} | {c['resume_s']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--step", type=int, default=2, help="keep every step-th MNI voxel (2 = 2 mm)")
    p.add_argument("--atlases", type=int, default=5)
    p.add_argument("--warp-mm", type=float, default=4.0)
    p.add_argument("--radius", type=float, default=4.0, help="weighted-voting window (mm)")
    p.add_argument("--pairs", type=int, default=6, help="batch pairs")
    p.add_argument("--batch-step", type=int, default=1, help="MNI step of the batch images")
    p.add_argument("--seed", type=int, default=20261124)
    p.add_argument("--out", type=Path, default=None, help="markdown output (json beside it)")
    args = p.parse_args(argv)
    results = {"date": dt.date.today().isoformat(), "args": vars(args) | {"out": str(args.out)},
               "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} "
               f"CPUs, Python {platform.python_version()}",
               "load_start": os.getloadavg()[0]}
    results["atlas"] = part_atlas(args)
    results["batch"] = part_batch(args)
    results["load_end"] = os.getloadavg()[0]
    text = render(results)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
