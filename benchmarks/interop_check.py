"""Manual cross-check: our transform files in ANTs and greedy, theirs in napari-reg.

Run with the peers' venv (ANTsPy and picsl-greedy are not test dependencies)::

    PYTHONPATH=src /work/benchvenv/bin/python benchmarks/interop_check.py [--out DIR]

The pair: the shipped MNI T1 (2 mm) as fixed, and the same image moved by a known affine
and a smooth deformation as moving (one modality, so every tool's default metric fits).
Printed: intensity differences as a fraction of the fixed image's range over the head
(linear interpolation everywhere, so only interpolation noise should remain), label
agreement for inverse maps, and point-mapping errors in mm.
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_reg._sample_data import sample_data_dir
from napari_reg.cli import main as napari_reg
from napari_reg.core.resample import resample
from napari_reg.core.transforms.base import CompositeTransform, MatrixTransform
from napari_reg.core.transforms.field import DisplacementField
from napari_reg.io.transforms import read_transform
from napari_reg.io.volumes import load_volume, save_volume

LPS = np.array([-1.0, -1.0, 1.0])


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), \
        np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def make_pair(folder: Path) -> dict[str, Path]:
    fixed = load_volume(sample_data_dir() / "mni_t1_fixed.nii.gz")
    linear = np.eye(4)
    linear[:3, :3] = _rotation(0.06, -0.04, 0.08) * 1.03
    linear[:3, 3] = [3.0, -4.0, 2.0]
    world = fixed.world_grid()
    u = np.stack([3.0 * np.sin(world[..., 1] / 18.0), 2.5 * np.cos(world[..., 0] / 20.0),
                  2.0 * np.sin(world[..., 2] / 16.0)], -1).astype(np.float32)
    # moving(T(x)) = fixed(x) for T = linear o (x + u): moving = fixed o T^-1
    truth = CompositeTransform([DisplacementField(u, fixed.affine), MatrixTransform(linear)])
    inverse = DisplacementField.from_transform(truth, fixed.shape, fixed.affine).inverse()
    moving = resample(fixed, fixed, inverse)
    labels = fixed.with_data((fixed.data > np.percentile(fixed.data, 55)).astype(np.int16)
                             + (fixed.data > np.percentile(fixed.data, 85)))
    paths = {k: folder / f"{k}.nii.gz" for k in ("fixed", "moving", "fixed_labels")}
    save_volume(fixed, paths["fixed"])
    save_volume(moving.with_data(moving.data.astype(np.float32)), paths["moving"])
    save_volume(labels, paths["fixed_labels"])
    return paths


def _prefix(out: Path, name: str) -> str:
    """An ANTs output prefix in a folder of its own (ANTsPy finds its outputs by globbing
    the prefix, so other files beginning with it would be taken for transforms)."""
    folder = out / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return str(folder) + "/"


class Report:
    def __init__(self, fixed: Path):
        img = load_volume(fixed).data
        self.head = img > np.percentile(img, 40)
        self.scale = float(np.ptp(img[self.head]))
        self.rows: list[tuple[str, str]] = []

    def images(self, what: str, a: Path, b: Path) -> None:
        x, y = load_volume(a).data.astype(float), load_volume(b).data.astype(float)
        d = np.abs(x - y)[self.head] / self.scale
        self.add(what, f"max {d.max():.4f}, mean {d.mean():.5f} of the range, "
                 f"{100 * np.mean(d > 0.01):.3f} % of head voxels > 1 %")

    def labels(self, what: str, a: Path, b: Path) -> None:
        x, y = load_volume(a).data, load_volume(b).data
        self.add(what, f"{100 * np.mean(x == y):.3f} % of voxels equal")

    def add(self, what: str, value: str) -> None:
        self.rows.append((what, value))
        print(f"{what:<72} {value}", flush=True)


def run(out: Path, peers: tuple[str, ...] = ("ants", "greedy")) -> None:
    import ants

    p = make_pair(out)
    report = Report(p["fixed"])
    fix, mov = str(p["fixed"]), str(p["moving"])
    a_fix, a_mov = ants.image_read(fix), ants.image_read(mov)
    a_lab = ants.image_read(str(p["fixed_labels"]))

    def ours_apply(name: str, *args: str, reference: str = fix, source: str = mov) -> Path:
        target = out / name
        assert napari_reg(["apply", *args, "--reference", reference, "--input", source,
                           "-o", str(target), "--overwrite"]) == 0
        return target

    def ants_apply(name, fixed, moving, transforms, invert=None, interp="linear") -> Path:
        img = ants.apply_transforms(fixed, moving, [str(t) for t in transforms],
                                    whichtoinvert=invert, interpolator=interp)
        ants.image_write(img, str(out / name))
        return out / name

    t0 = time.perf_counter()
    res = out / "ours"
    assert napari_reg(["register", fix, mov, "-o", str(res), "-q", "--transform", "syn",
                       "--metric", "ncc", "--overwrite"]) == 0
    report.add("napari-reg register --transform syn (s)", f"{time.perf_counter() - t0:.1f}")
    if "ants" in peers:
        ants_checks(out, p, res, report, ours_apply, ants_apply, a_fix, a_mov, a_lab)
    if "greedy" in peers:
        greedy_checks(out, fix, mov, res, report, ours_apply)


def ants_checks(out, p, res, report, ours_apply, ants_apply, a_fix, a_mov, a_lab) -> None:
    import ants

    mov = str(p["moving"])
    # ---- ours -> ANTs ------------------------------------------------------------
    report.images("ANTs -t warp.nii.gz -t transform.tfm vs our warped.nii.gz",
                  ants_apply("ants_fwd.nii.gz", a_fix, a_mov,
                             [res / "warp.nii.gz", res / "transform.tfm"]),
                  res / "warped.nii.gz")
    report.images("ANTs -t whole_map_field -t transform.tfm (the affine twice) vs ours",
                  ants_apply("ants_twice.nii.gz", a_fix, a_mov,
                             [res / "whole_map_field.nii.gz", res / "transform.tfm"]),
                  res / "warped.nii.gz")
    report.labels("ANTs -t [transform.mat,1] -t inverse_warp (labels) vs apply --inverse",
                  ants_apply("ants_inv.nii.gz", a_mov, a_lab,
                             [res / "transform.mat", res / "inverse_warp.nii.gz"],
                             [True, False], "nearestNeighbor"),
                  ours_apply("ours_inv.nii.gz", str(res), "--inverse", reference=mov,
                             source=str(p["fixed_labels"])))
    m = read_transform(res / "transform.tfm")
    tx = ants.read_transform(str(res / "transform.tfm"))
    pts = np.random.default_rng(0).uniform(-70, 70, (200, 3))
    theirs = np.array([tx.apply_to_point(tuple(q * LPS)) for q in pts]) * LPS
    err = np.abs(theirs - (pts @ m[:3, :3].T + m[:3, 3])).max()
    report.add("ANTsPy read_transform(transform.tfm) points vs our matrix", f"{err:.2e} mm")

    # ---- ANTs -> ours ------------------------------------------------------------
    t0 = time.perf_counter()
    reg = ants.registration(a_fix, a_mov, type_of_transform="SyN", reg_iterations=(40, 20, 0),
                            outprefix=_prefix(out, "ants_syn"),
                            write_composite_transform=False)
    report.add("ANTsPy registration SyN (s)", f"{time.perf_counter() - t0:.1f}")
    fwd, inv = reg["fwdtransforms"], reg["invtransforms"]
    chain = [a for t in fwd for a in ("-t", t)]
    report.images("napari-reg apply -t 1Warp -t 0GenericAffine vs ANTs apply_transforms",
                  ours_apply("ours_from_ants.nii.gz", *chain),
                  ants_apply("ants_own.nii.gz", a_fix, a_mov, fwd))
    inv_chain = ["-t", f"[{inv[0]},1]", "-t", inv[1]]
    report.labels("apply -t [0GenericAffine,1] -t 1InverseWarp vs ANTs (labels)",
                  ours_apply("ours_inv_from_ants.nii.gz", *inv_chain, reference=mov,
                             source=str(p["fixed_labels"])),
                  ants_apply("ants_own_inv.nii.gz", a_mov, a_lab, inv, [True, False],
                             "nearestNeighbor"))
    prefix = _prefix(out, "ants_composite")
    comp = ants.registration(a_fix, a_mov, type_of_transform="SyN",
                             reg_iterations=(40, 20, 0), outprefix=prefix,
                             write_composite_transform=True)
    fwd_c = comp["fwdtransforms"]
    fwd_c = [fwd_c] if isinstance(fwd_c, str) else list(fwd_c)
    h5 = next((Path(t) for t in fwd_c if str(t).endswith(".h5")),
              Path(prefix + "Composite.h5"))
    report.images("napari-reg apply Composite.h5 vs ANTs apply_transforms(Composite.h5)",
                  ours_apply("ours_from_h5.nii.gz", str(h5)),
                  ants_apply("ants_h5.nii.gz", a_fix, a_mov, [h5]))



def greedy_checks(out, fix, mov, res, report, ours_apply) -> None:
    from picsl_greedy import Greedy3D

    # ---- greedy / c3d ------------------------------------------------------------
    g, quiet = Greedy3D(), io.StringIO()
    t0 = time.perf_counter()
    g.execute(f"-d 3 -a -dof 12 -i {fix} {mov} -o {out / 'greedy_affine.mat'} "
              "-m NCC 2x2x2 -n 40x20x10 -ia-image-centers", out=quiet, err=quiet)
    report.add("greedy -a -dof 12 (s)", f"{time.perf_counter() - t0:.1f}")
    g.execute(f"-d 3 -rf {fix} -rm {mov} {out / 'greedy_resliced.nii.gz'} "
              f"-r {out / 'greedy_affine.mat'}", out=quiet, err=quiet)
    report.images("napari-reg apply greedy_affine.mat --format ras vs greedy -r",
                  ours_apply("ours_greedy.nii.gz", str(out / "greedy_affine.mat"),
                             "--format", "ras"), out / "greedy_resliced.nii.gz")
    assert napari_reg(["convert", str(res / "transform.tfm"), str(out / "ours_ras.mat"),
                       "--to", "ras", "--overwrite"]) == 0
    g.execute(f"-d 3 -rf {fix} -rm {mov} {out / 'greedy_ours.nii.gz'} "
              f"-r {out / 'ours_ras.mat'}", out=quiet, err=quiet)
    report.images("greedy -r (our affine via convert --to ras) vs apply transform.tfm",
                  out / "greedy_ours.nii.gz", ours_apply("ours_affine.nii.gz",
                                                         str(res / "transform.tfm")))
    g.execute(f"-d 3 -i {fix} {mov} -it {out / 'greedy_affine.mat'} -o "
              f"{out / 'greedy_warp.nii.gz'} -m NCC 2x2x2 -n 40x20 -s 2.0vox 0.5vox",
              out=quiet, err=quiet)
    g.execute(f"-d 3 -rf {fix} -rm {mov} {out / 'greedy_def.nii.gz'} -r "
              f"{out / 'greedy_warp.nii.gz'} {out / 'greedy_affine.mat'}", out=quiet, err=quiet)
    report.images("apply -t greedy_warp -t greedy_affine (--format ras) vs greedy -r",
                  ours_apply("ours_greedy_def.nii.gz", "-t", str(out / "greedy_warp.nii.gz"),
                             "-t", str(out / "greedy_affine.mat"), "--format", "ras"),
                  out / "greedy_def.nii.gz")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="keep the files here (default: a temporary folder)")
    parser.add_argument("--peers", nargs="+", default=["ants", "greedy"],
                        choices=["ants", "greedy"])
    args = parser.parse_args()
    folder = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="interop-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        run(folder, tuple(args.peers))
    finally:
        if not args.out:
            shutil.rmtree(folder, ignore_errors=True)
    sys.exit(0)
