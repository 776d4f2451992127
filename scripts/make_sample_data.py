"""Build the shipped sample pair in ``src/napari_reg/data/`` (run once; output is committed).

Source: the MNI ICBM152 2009a (symmetric) 1 mm T1 template and its grey/white matter
probability maps, as shipped inside nilearn (``nilearn/datasets/data/
mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_converted.nii.gz``); nothing is downloaded.

Outputs (world coordinates are RAS+ millimetres, MNI space for the fixed image):

* ``mni_t1_fixed.nii.gz``: the T1, anti-alias smoothed and resampled to a 2 mm grid
  cropped around the brain, uint8.
* ``mni_t2like_moving.nii.gz``: a T2-like contrast synthesised from the tissue maps (CSF
  bright, GM intermediate, WM dark, smooth multiplicative bias, Gaussian noise), moved by
  a known affine ``T_true`` and *resampled* onto its own grid (2.2 x 2.2 x 2.6 mm, x axis
  flipped (LAS), a different field of view). The motion is in the voxels, not the header.
* ``ground_truth_fixed_to_moving.txt``: the 4x4 ``T_true`` mapping FIXED world points to
  MOVING world points (``moving(T_true(x))`` shows the anatomy of ``fixed(x)``).
* ``fixed_landmarks.csv`` / ``moving_landmarks.csv``: ``id,x,y,z`` world RAS mm; moving =
  ``T_true(fixed)`` exactly.
* ``mni_tissue_labels_fixed.nii.gz``: 3-class tissue labels of the fixed image on its
  grid (1 = CSF, 2 = grey matter, 3 = white matter, 0 = outside the brain): the most
  probable class of the template's tissue maps, smoothed like the T1; uint8. With the T1
  it is an atlas for the Atlas panel (segment the moving image).

Usage: ``python scripts/make_sample_data.py [--out DIR]``. Deterministic (fixed seed).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

SEED = 20090
FIXED_SPACING = 2.0
MOVING_SPACING = (2.2, 2.2, 2.6)
# T_true = translate(c + t) @ R(axis, angle) @ diag(scale) @ translate(-c), c = brain centre.
ROT_AXIS = np.array([0.45, 0.3, 0.84])
ROT_DEG = 9.0
SCALE = np.array([1.03, 0.97, 1.02])
TRANSLATION = np.array([6.0, -7.0, 5.0])  # mm, |t| = 10.5 mm

# Approximate MNI positions (mm) of named structures, spread over the brain. The names
# are a guide for the eye; the correspondence between the two files is exact by
# construction (moving = T_true(fixed)).
LANDMARKS = {
    1: ("anterior commissure", (0.0, 2.0, -4.0)),
    2: ("splenium of corpus callosum", (0.0, -38.0, 12.0)),
    3: ("left putamen", (-25.0, 2.0, 2.0)),
    4: ("right insula", (38.0, 4.0, 4.0)),
    5: ("right frontal lobe", (22.0, 50.0, 12.0)),
    6: ("left occipital lobe", (-20.0, -86.0, 8.0)),
    7: ("left superior parietal / central region", (-30.0, -28.0, 60.0)),
    8: ("right cerebellum", (25.0, -65.0, -35.0)),
    9: ("left middle temporal lobe", (-52.0, -22.0, -10.0)),
}


LABELS_FILE = "mni_tissue_labels_fixed.nii.gz"


def tissue_labels(csf: np.ndarray, gm: np.ndarray, wm: np.ndarray, src_affine: np.ndarray,
                  shape: tuple, affine: np.ndarray) -> np.ndarray:
    """1 CSF / 2 GM / 3 WM (0 outside the brain) on the grid ``(shape, affine)``: the most
    probable class of the tissue maps, each smoothed like the T1 and sampled there."""
    points = grid_points(shape, affine)
    probs = np.stack([sample(ndimage.gaussian_filter(p, FIXED_SPACING / 2.355), src_affine,
                             points).reshape(shape) for p in (csf, gm, wm)])
    labels = (np.argmax(probs, axis=0) + 1).astype(np.uint8)
    labels[probs.sum(axis=0) < 0.5] = 0  # less than half of the voxel is brain
    return labels


def nilearn_files() -> dict[str, Path]:
    import nilearn

    base = Path(nilearn.__file__).parent / "datasets" / "data"
    return {k: base / f"mni_icbm152_{k}_tal_nlin_sym_09a_converted.nii.gz"
            for k in ("t1", "gm", "wm")}


def rotation(axis: np.ndarray, degrees: float) -> np.ndarray:
    """Rodrigues rotation matrix about a unit axis (right-handed, degrees)."""
    u = axis / np.linalg.norm(axis)
    a = np.deg2rad(degrees)
    k = np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]])
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * (k @ k)


def true_transform(center: np.ndarray) -> np.ndarray:
    """4x4 fixed world -> moving world (RAS mm)."""
    m = np.eye(4)
    m[:3, :3] = rotation(ROT_AXIS, ROT_DEG) @ np.diag(SCALE)
    m[:3, 3] = center + TRANSLATION - m[:3, :3] @ center
    return m


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def grid_points(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    return apply(affine, ijk.reshape(-1, 3).astype(np.float64))


def sample(src: np.ndarray, src_affine: np.ndarray, world: np.ndarray) -> np.ndarray:
    """Trilinear samples of ``src`` at world points (0 outside)."""
    vox = apply(np.linalg.inv(src_affine), world)
    return ndimage.map_coordinates(src, vox.T, order=1, mode="constant", cval=0.0)


def box_grid(lo: np.ndarray, hi: np.ndarray, spacing, flip_x: bool) -> tuple[tuple, np.ndarray]:
    """An axis-aligned grid covering [lo, hi] (world mm); RAS or, with flip_x, LAS."""
    spacing = np.broadcast_to(np.asarray(spacing, dtype=float), (3,))
    shape = tuple(int(n) for n in np.ceil((hi - lo) / spacing).astype(int) + 1)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = lo
    if flip_x:
        affine[0, 0] = -spacing[0]
        affine[0, 3] = lo[0] + (shape[0] - 1) * spacing[0]
    return shape, affine


def to_uint8(values: np.ndarray, top: float) -> np.ndarray:
    return np.clip(np.rint(values / top * 255.0), 0, 255).astype(np.uint8)


def save(data: np.ndarray, affine: np.ndarray, path: Path, description: str) -> None:
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=4)  # 4 = MNI152 space
    img.set_qform(affine, code=4)
    img.header["descrip"] = description[:79].encode()
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))


def main(out: Path) -> None:
    files = nilearn_files()
    imgs = {k: nib.load(str(p)) for k, p in files.items()}
    src_affine = imgs["t1"].affine
    t1 = np.asarray(imgs["t1"].dataobj, dtype=np.float32)
    gm = np.asarray(imgs["gm"].dataobj, dtype=np.float32) / 255.0
    wm = np.asarray(imgs["wm"].dataobj, dtype=np.float32) / 255.0

    # Brain (incl. CSF) = support of the skull-stripped T1, holes filled.
    brain = ndimage.binary_fill_holes(ndimage.binary_closing(t1 > 5, iterations=2))
    csf = np.clip(brain.astype(np.float32) - gm - wm, 0.0, 1.0)
    vox = np.argwhere(brain)
    lo_w = apply(src_affine, vox.min(0).astype(float))
    hi_w = apply(src_affine, vox.max(0).astype(float))
    center = (lo_w + hi_w) / 2.0

    # ---- fixed: T1 at 2 mm (sigma = FWHM of the new voxel / 2.355 in source voxels).
    margin = 6.0
    f_shape, f_affine = box_grid(lo_w - margin, hi_w + margin, FIXED_SPACING, flip_x=False)
    t1_s = ndimage.gaussian_filter(t1, FIXED_SPACING / 2.355)
    fixed = sample(t1_s, src_affine, grid_points(f_shape, f_affine)).reshape(f_shape)
    fixed_u8 = to_uint8(fixed, float(np.percentile(fixed[fixed > 0], 99.8)))

    # ---- moving: T2-like contrast, moved by T_true, on its own grid.
    t_true = true_transform(center)
    t2 = 1.0 * csf + 0.55 * gm + 0.25 * wm
    t2 = ndimage.gaussian_filter(t2, np.asarray(MOVING_SPACING) / 2.355)
    corners = np.array(np.meshgrid(*zip(lo_w, hi_w, strict=True), indexing="ij")).reshape(3, -1).T
    moved = apply(t_true, corners)
    m_lo = moved.min(0) - np.array([10.0, 4.0, 8.0])  # a field of view unlike the fixed one
    m_hi = moved.max(0) + np.array([6.0, 12.0, 5.0])
    m_shape, m_affine = box_grid(m_lo, m_hi, MOVING_SPACING, flip_x=True)
    y = grid_points(m_shape, m_affine)  # moving world
    x = apply(np.linalg.inv(t_true), y)  # the fixed-world point whose anatomy is seen at y
    moving = sample(t2, src_affine, x)
    # Smooth multiplicative bias (in scanner = moving world) and noise, as on a scanner.
    rel = (y - y.mean(0)) / 80.0
    bias = 1.0 + 0.10 * rel[:, 0] - 0.08 * rel[:, 1] + 0.06 * rel[:, 2] - 0.05 * rel[:, 2] ** 2
    rng = np.random.default_rng(SEED)
    moving = np.abs(moving * bias + rng.normal(0.0, 0.02, moving.shape))
    moving_u8 = to_uint8(moving.reshape(m_shape), 1.1)

    out.mkdir(parents=True, exist_ok=True)
    save(fixed_u8, f_affine, out / "mni_t1_fixed.nii.gz",
         "napari-reg sample FIXED: MNI152 2009a T1, 2 mm")
    save(moving_u8, m_affine, out / "mni_t2like_moving.nii.gz",
         "napari-reg sample MOVING: T2-like, moved by T_true")

    labels = tissue_labels(csf, gm, wm, src_affine, f_shape, f_affine)
    save(labels, f_affine, out / LABELS_FILE,
         "napari-reg sample: tissue labels of FIXED, 1 CSF 2 GM 3 WM")

    header = ("T_true: FIXED world -> MOVING world, RAS+ mm, homogeneous 4x4 (row-major).\n"
              "moving(T_true @ x) shows the anatomy of fixed(x).")
    np.savetxt(out / "ground_truth_fixed_to_moving.txt", t_true, fmt="%.10f", header=header)

    ids = sorted(LANDMARKS)
    fixed_pts = np.array([LANDMARKS[i][1] for i in ids])
    inside = ndimage.map_coordinates(brain.astype(float), apply(np.linalg.inv(src_affine),
                                                                fixed_pts).T, order=0)
    if not np.all(inside > 0):
        raise SystemExit(f"landmarks outside the brain: {np.array(ids)[inside == 0]}")
    for name, pts in (("fixed", fixed_pts), ("moving", apply(t_true, fixed_pts))):
        lines = ["id,x,y,z"] + [f"{i},{p[0]:.4f},{p[1]:.4f},{p[2]:.4f}"
                                for i, p in zip(ids, pts, strict=True)]
        (out / f"{name}_landmarks.csv").write_text("\n".join(lines) + "\n")
    for f in sorted(out.iterdir()):
        print(f"{f.name:40s} {f.stat().st_size / 1024:8.1f} KiB")
    print("fixed", f_shape, "moving", m_shape)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[1] / "src" / "napari_reg" / "data"
    parser.add_argument("--out", type=Path, default=default)
    main(parser.parse_args().out)
