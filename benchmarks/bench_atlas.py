"""Multi-atlas segmentation accuracy and batch throughput on the MNI152 template.

Part 1, multi-atlas Dice. From nilearn's MNI152 2009a T1 and its GM/WM maps (a CSF map is
derived: inside the hole-filled, dilated brain where GM + WM < 0.5), a label map
(1 CSF, 2 GM, 3 WM by largest probability) is made. The subject and every atlas are the
template pulled through their own known map ``x -> A_k x + u_k(x)`` (world mm): a random
affine within the GUIDE bounds and a smooth random displacement (max ``--warp-mm``), the
labels through the same map (nearest). Each atlas is registered to the subject (affine,
MI, defaults: the deformation stays; or affine + SyN), its labels propagated, and the
propagated maps fused; Dice per label against the subject's true labels. Reported: each
single atlas, majority vote, locally weighted voting (LNCC and LSSD), and nearest vs
linear propagation.

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
from napari_reg.core.atlas.fusion import fuse_labels, segment_with_atlases  # noqa: E402
from napari_reg.core.atlas.labels import Atlas, propagate_labels  # noqa: E402
from napari_reg.core.image import Volume, apply_affine  # noqa: E402
from napari_reg.core.qc import dice_per_label  # noqa: E402
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
    for label, transform in (("affine", "affine"), ("affine + SyN", "syn")):
        t0 = time.perf_counter()
        result = segment_with_atlases(subject, atlases, transform=transform, metric="mi",
                                      fusion="weighted", similarity="lncc",
                                      radius_mm=args.radius, truth=truth)
        seconds[label] = time.perf_counter() - t0
        rows.update(fusion_rows(result, subject, truth, atlases, args.radius, label,
                                linear_rows=transform == "affine"))
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


def part_template(args) -> dict:
    """Templates of a group with a known mean: the T1 under affines exp(+-G_k) (log-mean =
    identity) and smooth warps +-u_k, so the unbiased template is the T1 in its own place.
    Affine-only (registrations on 2 worker processes) and affine + SyN (in-process)."""
    from scipy import linalg

    from napari_reg.batch import executor_mapper
    from napari_reg.core.atlas.template import build_template

    t1, gm, wm, affine = load_mni(args.step)
    mask = brain_mask(gm, wm)
    truth = Volume(t1, affine, "mni")
    rng = np.random.default_rng(args.seed + 2)
    center = truth.center_world()
    images = []
    for k in range(args.template_images // 2):
        g = linalg.logm(random_affine(rng, center)).real * 0.5
        u = smooth_field(t1.shape, float(args.step), args.warp_mm / 2, rng)
        for sign in (1.0, -1.0):
            m = linalg.expm(sign * g)
            # image(y) = t1(m^-1 y + sign * u): template -> image maps are ~ m and the warps
            images.append(Volume(np.clip(pull(t1, affine, np.linalg.inv(m), sign * u, 1), 0,
                                         None), affine, f"g{k}{'ab'[sign < 0]}"))
    points = truth.voxel_to_world(np.argwhere(mask).astype(float))

    def score(template: Volume) -> float:
        a, b = template.data[mask].astype(float), t1[mask].astype(float)
        return float(np.corrcoef(a, b)[0, 1])

    out = {"n_images": len(images)}
    t0 = time.perf_counter()
    with executor_mapper(workers=2) as mapper:
        affine_result = build_template(images, truth, iterations=args.template_iterations,
                                       metric="mi", mapper=mapper)
    out["affine"] = {"seconds": time.perf_counter() - t0, "ncc_to_t1": score(
        affine_result.template), "bias_mm": [h.bias_mm for h in affine_result.history]}
    start = np.mean([im.data for im in images], axis=0)
    out["plain average"] = {"ncc_to_t1": score(Volume(start, affine))}
    t0 = time.perf_counter()
    syn_result = build_template(images, truth, iterations=args.template_iterations,
                                metric="mi", transform="syn", shape_step=0.5)
    out["affine + SyN"] = {"seconds": time.perf_counter() - t0, "ncc_to_t1": score(
        syn_result.template), "bias_mm": [h.bias_mm for h in syn_result.history]}
    # Where each template sits relative to the T1 (the known mean): affine registration of
    # the template to the T1, mean displacement over the brain (0 = unbiased).
    from napari_reg import register

    out["first image"] = {"ncc_to_t1": score(images[0])}
    for key, template in (("affine", affine_result.template),
                          ("affine + SyN", syn_result.template), ("first image", images[0])):
        m = register(truth, template, transform="affine", metric="mi").matrix
        out[key]["offset_mm"] = float(np.linalg.norm(apply_affine(m, points) - points,
                                                     axis=1).mean())
    return out


def render(results: dict) -> str:
    a, b = results.get("atlas"), results.get("batch")
    lines = [f"# Atlas segmentation and batch benchmark ({results['date']})", "",
             f"Machine: {results['machine']}. One run; load average at start "
             f"{results['load_start']:.2f}, at end {results['load_end']:.2f} (the 2 cores are "
             "shared with other engineers' jobs, so times are noisy)."]
    if a:
        lines += ["", "## Multi-atlas Dice (MNI152 T1 + GM/WM (+ derived CSF) labels)", "",
                 f"Subject and {a['n_atlases']} atlases: the template under its own random affine "
                 f"(GUIDE bounds) and smooth random warp (max {results['args']['warp_mm']} mm, "
                 f"~12 mm correlation), {a['spacing_mm']:g} mm grid {tuple(a['shape'])}. Every "
                 "atlas registered to the subject with `register()`: `transform=\"affine\"` (MI, "
                 "defaults) or `transform=\"syn\"` (affine MI, then SyN with its defaults). "
                 "Registration + propagation + weighted fusion of all atlases took "
                 + ", ".join(f"{v:.1f} s ({k})" for k, v in a["seconds"].items()) + ".", "",
                 "| method | CSF | GM | WM | mean |", "|---|---|---|---|---|"]
        for name, row in a["rows"].items():
            lines.append(f"| {name} | " + " | ".join(f"{row[v]:.3f}" for v in LABELS)
                         + f" | {mean_dice(row):.3f} |")
    t = results.get("template")
    if t:
        lines += ["", "## Template construction (known mean)", "",
                  f"{t['n_images']} images: the T1 ({results['args']['step']} mm) under affines "
                  "exp(+-G_k) (log-Euclidean mean = identity) and smooth warps +-u_k (max "
                  f"{results['args']['warp_mm'] / 2:g} mm), so the unbiased template is the T1 "
                  f"itself. {results['args']['template_iterations']} iterations, MI. Score: "
                  "correlation with the T1 over the brain.", "",
                  "| template | corr. with T1 | offset from T1 (mm) | bias removed per "
                  "iteration (mm) | seconds |", "|---|---|---|---|---|",
                  f"| plain average of the images | {t['plain average']['ncc_to_t1']:.4f} "
                  "| | | |"]
        lines.append(f"| first image alone (where a template built in one subject's space "
                     f"sits) | {t['first image']['ncc_to_t1']:.4f} | "
                     f"{t['first image']['offset_mm']:.3f} | | |")
        for key in ("affine", "affine + SyN"):
            r = t[key]
            lines.append(f"| groupwise, {key} | {r['ncc_to_t1']:.4f} | {r['offset_mm']:.3f} | "
                         + ", ".join(f"{b:.3f}" for b in r["bias_mm"])
                         + f" | {r['seconds']:.1f} |")
        lines += ["", "Offset: the template registered (affine, MI) to the T1, mean "
                  "displacement over the brain (0 = the template sits at the group's known "
                  "mean). The affine template's registrations ran on 2 local worker "
                  "processes."]
    if not b:
        return "\n".join(lines) + "\n"
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
    p.add_argument("--template-images", type=int, default=4, help="even number")
    p.add_argument("--template-iterations", type=int, default=3)
    p.add_argument("--skip", default="", help="comma list of parts to skip: atlas,template,batch")
    p.add_argument("--out", type=Path, default=None, help="markdown output (json beside it)")
    args = p.parse_args(argv)
    results = {"date": dt.date.today().isoformat(), "args": vars(args) | {"out": str(args.out)},
               "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} "
               f"CPUs, Python {platform.python_version()}",
               "load_start": os.getloadavg()[0]}
    skip = set(args.skip.split(","))
    for part, fn in (("atlas", part_atlas), ("template", part_template), ("batch", part_batch)):
        if part not in skip:
            results[part] = fn(args)
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
