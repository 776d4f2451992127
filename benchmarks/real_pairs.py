"""Real-anatomy pairs of different subjects and their scorer (no ground-truth map).

Data: ``../shared/data/real`` next to the checkout (override with ``NAPARI_REG_REAL_DATA``),
read at run time, never copied (see its README for origin and terms: the 2D slices are
ANTsPy's example images, Apache-2.0; Colin27 is the MNI's, whose notice must travel with
any copy):

* 2D: ``r27slice.jpg``, ``r30slice.jpg``, ``r62slice.jpg``: axial T1 slices of three
  subjects, 256 x 256 at 1 mm; each registered to the others.
* 3D: Colin27 (``ch2.nii.gz``, moving) registered to nilearn's ICBM 2009a T1 (fixed), both
  anti-alias smoothed and resampled to an isotropic grid (2 mm by default).

Conventions (GUIDE §2): arrays are voxel-indexed ``(i, j[, k])`` with a ``(d+1, d+1)``
voxel->world RAS mm affine; a tool's result is the dense map ``T(x) = x + u(x)`` from
**fixed** world mm to **moving** world mm, ``u`` of shape ``(d, *fixed.shape)`` on the
fixed grid (NaN where the tool's read-back has no value).

Scores, the same for every tool (:func:`score`):

* tissue labels: a 3-class k-means of the intensities inside each image's brain mask
  (1 = darkest, CSF; 2 = GM; 3 = brightest, WM on T1), computed once per image;
* Dice per class of the fixed labels with the moving labels warped by ``T`` (nearest
  neighbour), and their mean;
* NCC of the fixed image with the moving image warped by ``T`` (linear) inside the fixed
  brain mask;
* Jacobian determinant of the whole map ``T`` (central differences, world mm): minimum
  over the fixed grid, and the folded fraction (det <= 0) of the fixed brain mask and of
  the grid.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

__all__ = ["RealPair", "real_data_dir", "load_pairs", "brain_mask", "kmeans_labels",
           "score", "world_grid", "jacobian_det"]

SLICES = ("r27", "r30", "r62")
N_CLASSES = 3
CLASS_NAMES = ("CSF", "GM", "WM")


@dataclass
class RealPair:
    """Fixed and moving images on their own grids, with brain masks and tissue labels."""

    name: str
    fixed: np.ndarray
    fixed_affine: np.ndarray
    moving: np.ndarray
    moving_affine: np.ndarray
    fixed_mask: np.ndarray = field(repr=False, default=None)  # type: ignore[assignment]
    moving_mask: np.ndarray = field(repr=False, default=None)  # type: ignore[assignment]
    fixed_labels: np.ndarray = field(repr=False, default=None)  # type: ignore[assignment]
    moving_labels: np.ndarray = field(repr=False, default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.fixed_mask is None:
            self.fixed_mask = brain_mask(self.fixed)
            self.moving_mask = brain_mask(self.moving)
            self.fixed_labels = kmeans_labels(self.fixed, self.fixed_mask)
            self.moving_labels = kmeans_labels(self.moving, self.moving_mask)


def real_data_dir() -> Path:
    """``../shared/data/real`` from the checkout, or ``$NAPARI_REG_REAL_DATA``."""
    env = os.environ.get("NAPARI_REG_REAL_DATA")
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve().parent
    candidates += [p / "shared" / "data" / "real" for p in here.parents]
    for c in candidates:
        if (c / "ch2.nii.gz").is_file():
            return c
    raise SystemExit("real-anatomy data not found: expected ../shared/data/real (r27slice.jpg, "
                     "r30slice.jpg, r62slice.jpg, ch2.nii.gz) next to the checkout, or set "
                     "NAPARI_REG_REAL_DATA to its folder")


def _load_slice(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """8-bit JPEG -> float32 (i, j) array and a 1 mm 3x3 affine (row index = i)."""
    from PIL import Image

    data = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
    return data, np.eye(3)


def _to_spacing(data: np.ndarray, affine: np.ndarray, spacing_mm: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """Anti-alias smooth, then resample to an isotropic grid over the same field of view."""
    old = np.linalg.norm(affine[:3, :3], axis=0)
    if np.allclose(old, spacing_mm):
        return data.astype(np.float32), affine
    # Gaussian whose FWHM makes up the difference between the voxel sizes
    sigma_mm = np.sqrt(np.maximum(spacing_mm**2 - old**2, 0.0)) / 2.3548
    smoothed = ndimage.gaussian_filter(data.astype(np.float32), sigma_mm / old)
    zoom = spacing_mm / old  # new voxel -> old voxel along each axis
    shape = tuple(int(np.floor((n - 1) / z)) + 1 for n, z in zip(data.shape, zoom, strict=True))
    out = ndimage.affine_transform(smoothed, np.diag(zoom), output_shape=shape, order=3,
                                   mode="nearest")
    new_affine = affine.copy()
    new_affine[:3, :3] = affine[:3, :3] * zoom
    return np.clip(out, 0, None).astype(np.float32), new_affine


def _load_nifti(path: Path, spacing_mm: float) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    img = nib.load(str(path))
    return _to_spacing(np.asarray(img.get_fdata(), np.float32), img.affine, spacing_mm)


def icbm_t1_path() -> Path:
    import nilearn

    return (Path(nilearn.__file__).parent / "datasets" / "data"
            / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")


def load_pairs(which: str = "2d,3d", spacing_mm: float = 2.0, all_2d: bool = False
               ) -> list[RealPair]:
    """The real pairs: 2D slices (3 cyclic pairs, or all 6 ordered ones) and/or Colin27 ->
    ICBM 2009a at ``spacing_mm``; ``3d-t2`` adds a multi-modal pair: Colin27 (T1) to a
    T2-like contrast of the ICBM template (pairs.t2_like: CSF bright, GM mid, WM dark,
    from its tissue maps), scored with the labels of the ICBM T1 on the same grid."""
    base = real_data_dir()
    pairs = []
    if "2d" in which:
        slices = {s: _load_slice(base / f"{s}slice.jpg") for s in SLICES}
        order = ([(a, b) for a in SLICES for b in SLICES if a != b] if all_2d else
                 [(SLICES[i], SLICES[(i + 1) % 3]) for i in range(3)])
        for f, m in order:
            pairs.append(RealPair(f"{m}->{f}", *slices[f], *slices[m]))
    if "3d" in which.replace("3d-t2", ""):
        fixed = _load_nifti(icbm_t1_path(), spacing_mm)
        moving = _load_nifti(base / "ch2.nii.gz", spacing_mm)
        pairs.append(RealPair(f"colin27->icbm-{spacing_mm:g}mm", *fixed, *moving))
    if "3d-t2" in which:
        pairs.append(_multimodal_pair(base, spacing_mm))
    return pairs


def _multimodal_pair(base: Path, spacing_mm: float) -> RealPair:
    from pairs import load_mni, t2_like

    t1, gm, wm, affine = load_mni(1)
    t1_s, fixed_affine = _to_spacing(t1, affine, spacing_mm)
    t2_s, _ = _to_spacing(t2_like(t1, gm, wm), affine, spacing_mm)
    moving, moving_affine = _load_nifti(base / "ch2.nii.gz", spacing_mm)
    fixed_mask, moving_mask = brain_mask(t1_s), brain_mask(moving)
    return RealPair(f"colin27->icbm-t2like-{spacing_mm:g}mm", t2_s, fixed_affine, moving,
                    moving_affine, fixed_mask=fixed_mask, moving_mask=moving_mask,
                    fixed_labels=kmeans_labels(t1_s, fixed_mask),
                    moving_labels=kmeans_labels(moving, moving_mask))


# ---------------------------------------------------------------- labelling
def brain_mask(image: np.ndarray) -> np.ndarray:
    """Skull-stripped images: voxels above 5 % of the robust maximum, holes filled, the
    largest connected component."""
    img = np.asarray(image, np.float32)
    top = float(np.percentile(img[img > 0], 99)) if np.any(img > 0) else 1.0
    mask = ndimage.binary_fill_holes(img > 0.05 * top)
    lab, n = ndimage.label(mask)
    if n > 1:
        sizes = ndimage.sum(mask, lab, range(1, n + 1))
        mask = lab == (int(np.argmax(sizes)) + 1)
    return mask


def kmeans_labels(image: np.ndarray, mask: np.ndarray, k: int = N_CLASSES,
                  iterations: int = 100) -> np.ndarray:
    """1-D k-means of the intensities in ``mask`` (deterministic: quantile start), labels
    1..k ordered by class mean; 0 outside the mask. uint8."""
    values = np.asarray(image, np.float64)[mask]
    centers = np.quantile(values, (np.arange(k) + 0.5) / k)
    for _ in range(iterations):
        assign = np.argmin(np.abs(values[:, None] - centers[None, :]), axis=1)
        new = np.array([values[assign == c].mean() if np.any(assign == c) else centers[c]
                        for c in range(k)])
        if np.allclose(new, centers):
            break
        centers = new
    order = np.argsort(centers)
    rank = np.empty(k, np.uint8)
    rank[order] = np.arange(1, k + 1, dtype=np.uint8)
    labels = np.zeros(mask.shape, np.uint8)
    labels[mask] = rank[np.argmin(np.abs(values[:, None] - centers[None, :]), axis=1)]
    return labels


# ---------------------------------------------------------------- scoring
def world_grid(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """World RAS mm of every voxel, ``(d, *shape)`` float64."""
    d = len(shape)
    ijk = np.indices(shape, dtype=np.float64)
    return (np.tensordot(affine[:d, :d], ijk, axes=1)
            + affine[:d, d].reshape((d,) + (1,) * d))


def _to_voxel(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    d = points.shape[0]
    inv = np.linalg.inv(affine)
    return np.tensordot(inv[:d, :d], points, axes=1) + inv[:d, d].reshape((d,) + (1,) * d)


def jacobian_det(u: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """det of d(x + u)/dx (central differences in world mm) on the grid, float64."""
    d = u.shape[0]
    inv = np.linalg.inv(affine[:d, :d])  # d(voxel)/d(world)
    jac = np.empty(u.shape[1:] + (d, d), np.float64)
    for c in range(d):
        g_vox = np.gradient(u[c].astype(np.float64))
        for a in range(d):
            jac[..., c, a] = sum(g_vox[k] * inv[k, a] for k in range(d))
        jac[..., c, c] += 1.0
    return np.linalg.det(jac)


def score(pair: RealPair, u: np.ndarray) -> dict[str, float]:
    """Overlap, similarity and regularity of the map ``x + u(x)`` (fixed -> moving, mm)."""
    u = np.asarray(u, np.float64)
    d = pair.fixed.ndim
    if u.shape != (d, *pair.fixed.shape):
        raise ValueError(f"map has shape {u.shape}, expected {(d, *pair.fixed.shape)}")
    known = np.all(np.isfinite(u), axis=0)
    u = np.where(known, u, 0.0)
    vox = _to_voxel(world_grid(pair.fixed.shape, pair.fixed_affine) + u, pair.moving_affine)
    warped_labels = ndimage.map_coordinates(pair.moving_labels, vox, order=0, mode="constant",
                                            cval=0)
    warped_labels[~known] = 0
    out: dict[str, float] = {}
    dices = []
    for c, name in enumerate(CLASS_NAMES, start=1):
        a, b = pair.fixed_labels == c, warped_labels == c
        dice = 2.0 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1)
        out[f"dice_{name}"] = float(dice)
        dices.append(dice)
    out["dice_mean"] = float(np.mean(dices))
    warped = ndimage.map_coordinates(pair.moving.astype(np.float64), vox, order=1,
                                     mode="constant", cval=0.0)
    m = pair.fixed_mask & known
    f, w = pair.fixed[m].astype(np.float64), warped[m]
    f, w = f - f.mean(), w - w.mean()
    out["ncc_brain"] = float((f * w).sum() / np.sqrt((f * f).sum() * (w * w).sum()))
    det = jacobian_det(u, pair.fixed_affine)
    valid = ndimage.binary_erosion(known, iterations=1, border_value=1)
    out["jac_min"] = float(det[valid].min())
    out["jac_max"] = float(det[valid].max())
    brain = pair.fixed_mask & valid
    out["folded_brain"] = float(np.count_nonzero(det[brain] <= 0) / max(brain.sum(), 1))
    out["folded_grid"] = float(np.count_nonzero(det[valid] <= 0) / max(valid.sum(), 1))
    out["unknown_brain"] = int(np.count_nonzero(pair.fixed_mask & ~known))
    return out
