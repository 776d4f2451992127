"""Held-out registration pairs with a known affine, built from the nilearn MNI152 template.

Conventions (GUIDE §2, the same as napari_reg's core):

* Every image is a numpy array indexed by voxel ``(i, j, k)`` plus a 4x4 voxel->world
  affine in RAS millimetres.
* ``t_true`` is the homogeneous 4x4 matrix that maps **fixed** world mm to **moving**
  world mm, the direction a registration result has. The moving image is made by pull
  resampling the fixed content through the inverse:
  ``moving(y) = content(t_true^{-1}(y))``, so that ``moving(t_true(x)) = content(x)``
  and a perfect registration returns ``t_true``.
* TRE (target registration error) = mean over the brain-mask voxels ``x`` (world mm) of
  ``|t_est(x) - t_true(x)|`` in mm.

Only numpy, scipy and nibabel are used (no napari_reg import), so this module runs in
the peers' venv and in the project venv alike.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

__all__ = [
    "Pair",
    "make_pairs",
    "mni_paths",
    "load_mni",
    "random_affine",
    "t2_like",
    "bias_field",
    "MODALITIES",
    "tre",
]

# Bounds of the random affine (GUIDE §4).
MAX_ROTATION_DEG = 12.0
MAX_TRANSLATION_MM = 15.0
MAX_SCALE = 0.08
MAX_SHEAR = 0.04
# Held-out-like multi-modal pairs: the T2-like contrast under a smooth multiplicative bias
# field of up to +-10 % (coil inhomogeneity, never corrected in the held-out pairs).
MAX_BIAS = 0.10
MODALITIES = ("T1-T1", "T1-T2like", "T1-T2like+bias")


@dataclass
class Pair:
    """One fixed/moving pair with its ground truth.

    Attributes
    ----------
    name
        Short id, e.g. ``"t1t1-0"``.
    modality
        ``"T1-T1"`` (mono-modal) or ``"T1-T2like"`` (multi-modal).
    fixed, moving
        float32 arrays indexed by voxel ``(i, j, k)``.
    fixed_affine, moving_affine
        4x4 voxel->world (RAS mm) matrices.
    mask
        bool array on the fixed grid: the brain voxels where TRE is measured.
    t_true
        4x4 fixed world (RAS mm) -> moving world (RAS mm) matrix.
    """

    name: str
    modality: str
    fixed: np.ndarray
    fixed_affine: np.ndarray
    moving: np.ndarray
    moving_affine: np.ndarray
    mask: np.ndarray
    t_true: np.ndarray

    def mask_points(self) -> np.ndarray:
        """World RAS mm of the mask voxels, shape ``(N, 3)``."""
        ijk = np.argwhere(self.mask).astype(np.float64)
        return ijk @ self.fixed_affine[:3, :3].T + self.fixed_affine[:3, 3]


def mni_paths() -> dict[str, Path]:
    """Paths of nilearn's bundled MNI152 2009a 1 mm T1, GM and WM maps."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or spec.origin is None:
        raise RuntimeError("nilearn is not installed: it ships the MNI152 template used here")
    data = Path(spec.origin).parent / "datasets" / "data"
    paths = {
        key: data / f"mni_icbm152_{key}_tal_nlin_sym_09a_converted.nii.gz"
        for key in ("t1", "gm", "wm")
    }
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        raise RuntimeError(f"MNI152 files missing from nilearn: {missing}")
    return paths


def load_mni(step: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load the template as ``(t1, gm, wm, affine)``.

    ``t1`` is float32 in [0, 255]; ``gm`` and ``wm`` are probabilities in [0, 1]. ``step``
    > 1 keeps every ``step``-th voxel (for fast tests); the affine is adjusted so that
    world positions stay exact.
    """
    import nibabel as nib

    paths = mni_paths()
    images = {k: nib.load(str(p)) for k, p in paths.items()}
    affine = images["t1"].affine.copy()
    sl = (slice(None, None, step),) * 3
    t1 = np.asarray(images["t1"].get_fdata(dtype=np.float32)[sl])
    # The tissue maps are stored as uint8 0..255 probabilities.
    gm = np.asarray(images["gm"].get_fdata(dtype=np.float32)[sl]) / 255.0
    wm = np.asarray(images["wm"].get_fdata(dtype=np.float32)[sl]) / 255.0
    affine[:3, :3] = affine[:3, :3] * step
    return t1, gm, wm, affine


def brain_mask(gm: np.ndarray, wm: np.ndarray) -> np.ndarray:
    """Brain voxels: GM + WM probability > 0.5."""
    return (gm + wm) > 0.5


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation matrix about a unit ``axis`` by ``angle`` radians (Rodrigues)."""
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def random_affine(rng: np.random.Generator, center: np.ndarray) -> np.ndarray:
    """A random 4x4 world (RAS mm) affine about ``center`` (mm) within the GUIDE bounds.

    ``A = R @ H @ S``: rotation by at most 12 deg about a random axis, shear (upper
    triangular, entries <= 0.04), per-axis scale within 1 +- 8 %; then a translation of
    at most 15 mm in a random direction. ``T(x) = A (x - c) + c + t``.
    """
    rot = _rotation(_unit(rng), np.deg2rad(rng.uniform(0.0, MAX_ROTATION_DEG)))
    shear = np.eye(3)
    shear[[0, 0, 1], [1, 2, 2]] = rng.uniform(-MAX_SHEAR, MAX_SHEAR, size=3)
    scale = np.diag(rng.uniform(1.0 - MAX_SCALE, 1.0 + MAX_SCALE, size=3))
    a = rot @ shear @ scale
    t = _unit(rng) * rng.uniform(0.0, MAX_TRANSLATION_MM)
    m = np.eye(4)
    m[:3, :3] = a
    m[:3, 3] = center + t - a @ center
    return m


def t2_like(t1: np.ndarray, gm: np.ndarray, wm: np.ndarray) -> np.ndarray:
    """A T2-weighted-looking contrast from the tissue maps (float32, about 0..255).

    Inside the (slightly dilated, hole-filled) brain: CSF bright (the rest of the
    probability), GM mid, WM dark. Outside the brain the head keeps a dimmed, inverted
    T1 structure so that the two images do not share a linear intensity relation
    anywhere: only a mutual-information-type metric can align them.
    """
    brain = ndimage.binary_fill_holes(ndimage.binary_dilation(brain_mask(gm, wm), iterations=3))
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0) * brain
    inside = 230.0 * csf + 140.0 * gm + 60.0 * wm
    head = t1 > 15.0
    outside = np.where(head, 40.0 + 0.4 * (255.0 - t1), 0.0)
    return np.where(brain, inside, outside).astype(np.float32)


def bias_field(shape: tuple[int, ...], rng: np.random.Generator,
               amplitude: float = MAX_BIAS) -> np.ndarray:
    """A smooth multiplicative bias field (float32, mean ~1) over the voxel grid.

    A random second-order polynomial of the normalised voxel coordinates in [-1, 1]
    (linear ramps plus quadratic and cross terms, as coil sensitivity looks over a head),
    scaled so that its extreme over the grid is exactly ``1 +- amplitude``.
    """
    g = np.meshgrid(*[np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape],
                    indexing="ij")
    terms = [*g] + [g[a] * g[b] for a in range(len(g)) for b in range(a, len(g))]
    poly = sum(c * t for c, t in zip(rng.uniform(-1.0, 1.0, len(terms)), terms, strict=True))
    poly -= 0.5 * (poly.max() + poly.min())
    return (1.0 + amplitude * poly / np.abs(poly).max()).astype(np.float32)


def _pull(content: np.ndarray, affine: np.ndarray, t_true: np.ndarray) -> np.ndarray:
    """``moving(y) = content(t_true^{-1}(y))`` on the same voxel grid (cubic spline).

    In voxel indices: ``v_content = affine^-1 @ t_true^-1 @ affine @ v_moving``.
    """
    vox = np.linalg.inv(affine) @ np.linalg.inv(t_true) @ affine
    out = ndimage.affine_transform(
        content.astype(np.float32), vox[:3, :3], vox[:3, 3], order=3, mode="constant", cval=0.0
    )
    return np.clip(out, 0.0, None).astype(np.float32)


def make_pairs(
    n_per_modality: int = 2,
    seed: int = 20261124,
    modalities: tuple[str, ...] = ("T1-T1", "T1-T2like"),
    step: int = 1,
) -> list[Pair]:
    """Build ``n_per_modality`` pairs of each modality with a seeded RNG.

    The fixed image is always the MNI T1. Mono-modal moving images are the T1 itself,
    multi-modal ones the T2-like contrast plus mild Gaussian noise (sigma 2 % of 255,
    added after resampling); ``T1-T2like+bias`` multiplies that moving image by a
    smooth +-10 % bias field (:func:`bias_field`) before the noise. Fixed and moving
    share the template grid (1 mm, or ``step`` mm). Each pair gets its own random
    affine about the brain's centre.
    """
    t1, gm, wm, affine = load_mni(step)
    mask = brain_mask(gm, wm)
    ijk_center = np.argwhere(mask).mean(axis=0)
    center = affine[:3, :3] @ ijk_center + affine[:3, 3]
    t2 = t2_like(t1, gm, wm)
    rng = np.random.default_rng(seed)
    pairs = []
    for modality in modalities:
        if modality not in MODALITIES:
            raise ValueError(f"unknown modality {modality!r}: use one of {MODALITIES}")
        for i in range(n_per_modality):
            t_true = random_affine(rng, center)
            if modality == "T1-T1":
                moving = _pull(t1, affine, t_true)
            else:
                moving = _pull(t2, affine, t_true)
                if modality == "T1-T2like+bias":
                    moving *= bias_field(moving.shape, rng)
                moving += rng.normal(0.0, 0.02 * 255.0, size=moving.shape).astype(np.float32)
                moving = np.clip(moving, 0.0, None)
            tag = {"T1-T1": "t1t1", "T1-T2like": "t1t2", "T1-T2like+bias": "t1t2b"}[modality]
            pairs.append(
                Pair(f"{tag}-{i}", modality, t1, affine.copy(), moving, affine.copy(), mask, t_true)
            )
    return pairs


def tre(pair: Pair, t_est: np.ndarray) -> tuple[float, float]:
    """Mean and max of ``|t_est(x) - t_true(x)|`` (mm) over the pair's mask voxels."""
    pts = pair.mask_points()
    diff = np.asarray(t_est, dtype=np.float64) - pair.t_true
    err = np.linalg.norm(pts @ diff[:3, :3].T + diff[:3, 3], axis=1)
    return float(err.mean()), float(err.max())
