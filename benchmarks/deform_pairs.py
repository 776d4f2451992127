"""Deformable benchmark cases: the MNI152 T1 warped by a known smooth random field.

Conventions (GUIDE §2, as in pairs.py):

* Images are numpy arrays indexed by voxel ``(i, j, k)`` plus a 4x4 voxel->world affine
  in RAS millimetres. Fixed and moving share one grid.
* The truth is a dense map ``T_true(x) = x + u(x)`` from **fixed** world mm to **moving**
  world mm, stored as ``u`` (components first, ``(3, X, Y, Z)``, world RAS mm) on the
  fixed grid: the direction a registration result has.
* The moving image is the fixed content pulled through the numerical inverse,
  ``moving(y) = content(T_true^{-1}(y))``, so that ``moving(T_true(x)) = content(x)``.
  ``T_true^{-1}(y) = y + w(y)`` is found by the fixed-point iteration
  ``w(y) = -u(y + w(y))`` (it converges because ``|grad u| < 1`` here, and the
  residual is reported).
* Errors are measured on the FIXED brain mask: mean/max of ``|T_est(x) - T_true(x)|``,
  Dice of the fixed GM map with the moving GM map warped back by ``T_est``, and the
  Jacobian determinant of ``T_est`` (minimum and folded fraction ``det <= 0``).

``u`` is the sum of two Gaussian-smoothed white-noise vector fields (sigmas 12 and 24 mm,
equal RMS), scaled so that its largest vector over the brain is ``max_mm`` (6-10 mm).
Only numpy, scipy and nibabel (through pairs.py) are used, so this module runs in the
peers' venv and in the project venv alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from pairs import brain_mask, load_mni

__all__ = [
    "DeformCase",
    "make_case",
    "random_field",
    "invert_field",
    "jacobian_det",
    "evaluate",
    "resample_case",
    "world_grid",
]

FIELD_SIGMAS_MM = (12.0, 24.0)
MAX_RANGE_MM = (6.0, 10.0)


@dataclass
class DeformCase:
    """One fixed/moving pair with a known dense fixed->moving map.

    Attributes
    ----------
    fixed, moving
        float32 T1 arrays on the same grid (``affine``).
    fixed_gm, moving_gm
        GM probability maps in [0, 1]: the fixed one and the same content pulled through
        ``T_true^{-1}`` (for the Dice check).
    mask
        bool brain mask (GM + WM > 0.5) of the FIXED image: where errors are measured.
    u_true
        ``(3, X, Y, Z)`` float32, world RAS mm: ``T_true(x) = x + u_true(x)``.
    inverse_residual_mm
        max over the grid of ``|T_true(T_true^{-1}(y)) - y|`` (quality of the inverse).
    """

    name: str
    affine: np.ndarray
    fixed: np.ndarray
    moving: np.ndarray
    fixed_gm: np.ndarray
    moving_gm: np.ndarray
    mask: np.ndarray
    u_true: np.ndarray
    max_mm: float
    inverse_residual_mm: float


def world_grid(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """World RAS mm of every voxel, ``(3, *shape)`` float64."""
    ijk = np.indices(shape, dtype=np.float64)
    return np.tensordot(affine[:3, :3], ijk, axes=1) + affine[:3, 3].reshape(3, 1, 1, 1)


def _to_voxel(points_world: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """``(3, ...)`` world mm -> voxel coordinates of ``affine``'s grid."""
    inv = np.linalg.inv(affine)
    extra = (1,) * (points_world.ndim - 1)
    return np.tensordot(inv[:3, :3], points_world, axes=1) + inv[:3, 3].reshape(3, *extra)


def _interp(components: np.ndarray, vox: np.ndarray, order: int = 1) -> np.ndarray:
    """Interpolate each component at voxel coordinates ``vox`` (edges: nearest value)."""
    return np.stack([
        ndimage.map_coordinates(c, vox, order=order, mode="nearest", output=np.float32)
        for c in components
    ])


def random_field(
    shape: tuple[int, ...],
    affine: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    max_mm: float,
) -> np.ndarray:
    """Smooth random displacement ``(3, *shape)`` float32 (world RAS mm), max |u| on mask = max_mm.

    White noise per component on a 4 mm lattice, Gaussian-smoothed (sigma in mm),
    summed over :data:`FIELD_SIGMAS_MM` with equal RMS, then cubic-upsampled to the grid.
    The coarse lattice makes it cheap; the field is far smoother than 4 mm anyway.
    """
    spacing = float(np.linalg.norm(affine[:3, :3], axis=0).mean())
    coarse_step = max(1, int(round(4.0 / spacing)))
    coarse_shape = tuple(int(np.ceil(n / coarse_step)) + 1 for n in shape)
    total = np.zeros((3, *coarse_shape), np.float64)
    for sigma_mm in FIELD_SIGMAS_MM:
        noise = rng.normal(size=(3, *coarse_shape))
        sm = np.stack([
            ndimage.gaussian_filter(c, sigma_mm / (coarse_step * spacing), mode="reflect")
            for c in noise
        ])
        total += sm / np.sqrt(np.mean(sm**2))
    # upsample the coarse lattice (voxel i*step of the fine grid) to every fine voxel
    fine = np.indices(shape, dtype=np.float64) / coarse_step
    u = _interp(total.astype(np.float32), fine, order=3)
    # u is generated in voxel-axis directions; treat it as world mm vectors directly
    # (any orientation of a random isotropic field is as random)
    peak = float(np.sqrt((u**2).sum(axis=0))[mask].max())
    return (u * np.float32(max_mm / peak)).astype(np.float32)


def invert_field(
    u: np.ndarray, affine: np.ndarray, iterations: int = 40
) -> tuple[np.ndarray, float]:
    """``w`` with ``T^{-1}(y) = y + w(y)`` for ``T(x) = x + u(x)``, and the residual (mm).

    Fixed-point iteration ``w <- -u(y + w)`` on the same grid; the residual is the max
    over the grid of ``|u(y + w(y)) + w(y)|`` = ``|T(T^{-1}(y)) - y|``.
    """
    y = world_grid(u.shape[1:], affine)
    w = -u.copy()
    for _ in range(iterations):
        w = -_interp(u, _to_voxel(y + w, affine))
    residual = _interp(u, _to_voxel(y + w, affine)) + w
    return w, float(np.sqrt((residual**2).sum(axis=0)).max())


def jacobian_det(components: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """det of d(x + u)/dx (central differences, world mm) on the grid, float32."""
    inv = np.linalg.inv(affine[:3, :3])  # d(voxel)/d(world)
    jac = np.empty(components.shape[1:] + (3, 3), np.float32)
    for c in range(3):
        g_vox = np.gradient(components[c].astype(np.float32))  # d u_c / d voxel axis
        for a in range(3):
            jac[..., c, a] = sum(g_vox[k] * inv[k, a] for k in range(3))
        jac[..., c, c] += 1.0
    return np.linalg.det(jac).astype(np.float32)


def make_case(seed: int = 20261124, step: int = 1, max_mm: float | None = None) -> DeformCase:
    """The benchmark case: MNI152 T1 (every ``step``-th voxel) and a random warp of it."""
    t1, gm, wm, affine = load_mni(step)
    mask = brain_mask(gm, wm)
    rng = np.random.default_rng(seed)
    if max_mm is None:
        max_mm = float(rng.uniform(*MAX_RANGE_MM))
    u = random_field(t1.shape, affine, mask, rng, max_mm)
    w, residual = invert_field(u, affine)
    vox = _to_voxel(world_grid(t1.shape, affine) + w, affine)
    moving = ndimage.map_coordinates(t1, vox, order=3, mode="constant", cval=0.0)
    moving_gm = ndimage.map_coordinates(gm, vox, order=1, mode="constant", cval=0.0)
    return DeformCase(
        f"mni-{step}mm-seed{seed}", affine, t1.astype(np.float32),
        np.clip(moving, 0.0, None).astype(np.float32), gm.astype(np.float32),
        moving_gm.astype(np.float32), mask, u, max_mm, residual)


def resample_case(case: DeformCase, voxel_factor: float) -> DeformCase:
    """The same case on an isotropic grid with ``voxel_factor`` times the voxel count.

    Spacing ``s = s0 * voxel_factor^(-1/3)`` over the same field of view; images
    cubic, GM linear, mask nearest, the truth's vectors (world mm, unchanged) linear.
    """
    old_shape = np.array(case.fixed.shape)
    scale = voxel_factor ** (-1.0 / 3.0)
    new_shape = tuple(int(round(n / scale)) for n in old_shape)
    zoom = (old_shape - 1) / (np.array(new_shape) - 1)  # new voxel -> old voxel
    affine = case.affine.copy()
    affine[:3, :3] = case.affine[:3, :3] * zoom
    vox = np.indices(new_shape, dtype=np.float32) * zoom.reshape(3, 1, 1, 1).astype(np.float32)

    def pull(a: np.ndarray, order: int) -> np.ndarray:
        return ndimage.map_coordinates(a, vox, order=order, mode="nearest", output=np.float32)

    return DeformCase(
        f"{case.name}-x{voxel_factor:g}", affine, np.clip(pull(case.fixed, 3), 0, None),
        np.clip(pull(case.moving, 3), 0, None), pull(case.fixed_gm, 1),
        pull(case.moving_gm, 1), pull(case.mask.astype(np.float32), 0) > 0.5,
        _interp(case.u_true, vox), case.max_mm, case.inverse_residual_mm)


def evaluate(case: DeformCase, u_est: np.ndarray) -> dict[str, float]:
    """Errors of an estimated fixed->moving map ``x + u_est(x)`` (``(3, X, Y, Z)``, mm).

    * ``err_mean_mm`` / ``err_max_mm``: ``|u_est - u_true|`` over the fixed brain mask;
    * ``dice_gm``: Dice of (fixed GM > 0.5) with (moving GM at ``T_est(x)`` > 0.5);
    * ``jac_min`` / ``folded_fraction``: Jacobian determinant of ``T_est`` over the mask
      dilated by 3 voxels, less the voxels whose map (or a neighbour's) leaves the moving
      grid; ``jac_min_grid`` over the whole fixed grid;
    * ``mask_outside``: brain-mask voxels that ``T_est`` maps outside the moving grid
      (the brain touches the template's lowest slice); ``mask_unknown``: those of them
      the tool's read-back returned as NaN (excluded from the error; counted as
      non-GM for Dice).
    """
    u_est = np.asarray(u_est, dtype=np.float32)
    if u_est.shape != case.u_true.shape:
        raise ValueError(f"estimated field has shape {u_est.shape}, expected {case.u_true.shape}")
    # NaN = a point the tool's read-back could not map (ANTs/DIPY off the moving grid)
    known = np.all(np.isfinite(u_est), axis=0)
    u_est = np.where(known, u_est, np.float32(0.0))
    m = case.mask & known
    err = np.sqrt(sum((u_est[c][m] - case.u_true[c][m]) ** 2 for c in range(3)))
    vox = _to_voxel(world_grid(case.fixed.shape, case.affine).astype(np.float32) + u_est,
                    case.affine)
    warped_gm = ndimage.map_coordinates(case.moving_gm, vox, order=1, mode="constant",
                                        cval=0.0)
    a, b = case.fixed_gm > 0.5, (warped_gm > 0.5) & known
    dice = 2.0 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1)
    # The Jacobian only where the map and its neighbours are known and inside the moving
    # grid (the brain touches the template's lowest slice; off the grid no tool has data).
    upper = (np.array(case.moving.shape) - 1.0).reshape(3, 1, 1, 1)
    inside = known & np.all((vox >= 0.0) & (vox <= upper), axis=0)
    del vox
    det = jacobian_det(u_est, case.affine)
    region = ndimage.binary_dilation(case.mask, iterations=3)
    valid = region & ndimage.binary_erosion(inside, iterations=1, border_value=0)
    return {
        "err_mean_mm": float(err.mean()),
        "err_max_mm": float(err.max()),
        "dice_gm": float(dice),
        "jac_min": float(det[valid].min()),
        "folded_fraction": float(np.count_nonzero(det[valid] <= 0) / np.count_nonzero(valid)),
        "jac_min_grid": float(det.min()),
        "mask_outside": int(np.count_nonzero(case.mask & ~inside)),
        "mask_unknown": int(np.count_nonzero(case.mask & ~known)),
    }
