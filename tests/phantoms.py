"""Analytic test images: a smooth phantom defined in world mm, sampled on any grid.

Because the phantom is a function of world position, a "moved" image is generated
exactly (no interpolation): moving(y) = f(T_true^-1(y)) so that moving(T_true(x)) = f(x)
= fixed(x). T_true maps fixed world -> moving world, like every transform here.
"""

from __future__ import annotations

import numpy as np

from napari_reg.core.image import Volume, apply_affine


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = (np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay),
                              np.cos(az), np.sin(az))
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def homogeneous(linear: np.ndarray, translation, center=None) -> np.ndarray:
    d = linear.shape[0]
    center = np.zeros(d) if center is None else np.asarray(center, float)
    m = np.eye(d + 1)
    m[:d, :d] = linear
    m[:d, d] = np.asarray(translation, float) + center - linear @ center
    return m


def grid_affine(shape, spacing, origin=None, rotation_matrix=None) -> np.ndarray:
    """Voxel->world affine placing the grid centre at ``origin`` (world mm)."""
    d = len(shape)
    lin = np.diag(np.asarray(spacing, float))
    if rotation_matrix is not None:
        lin = rotation_matrix @ lin
    origin = np.zeros(d) if origin is None else np.asarray(origin, float)
    centre_index = (np.asarray(shape, float) - 1) / 2
    a = np.eye(d + 1)
    a[:d, :d] = lin
    a[:d, d] = origin - lin @ centre_index
    return a


# Soft-edged ellipsoids ("tissues"): centre (mm), semi-axes (mm), intensity. Edges
# ~1.5 mm wide, like tissue boundaries: sharp enough to pin a registration down,
# smooth enough for linear interpolation.
_TISSUES_3D = [
    ((0, 0, 0), (30, 24, 20), 0.5),
    ((2, 1, 0), (22, 17, 14), 0.3),
    ((10, 7, -4), (6, 9, 5), 0.4),
    ((-13, 6, 6), (5, 4, 8), -0.45),
    ((4, -13, 9), (7, 5, 4), 0.35),
    ((-6, -8, -10), (4, 7, 6), -0.3),
    ((15, -4, 10), (3, 4, 6), 0.5),
]
_EDGE_MM = 1.5


def phantom(points: np.ndarray, contrast: str = "t1") -> np.ndarray:
    """Piecewise-smooth phantom at world points ``(N, d)`` (d = 2 or 3).

    ``contrast='t2'`` gives each tissue another, non-monotonically related intensity:
    a stand-in for another MR contrast (needs a statistical metric such as MI).
    """
    points = np.asarray(points, float)
    d = points.shape[-1]
    t2_levels = [0.9, -0.6, 0.5, 0.6, -0.3, 0.4, -0.5]
    value = np.zeros(points.shape[:-1])
    for (centre, axes, t1), t2 in zip(_TISSUES_3D, t2_levels, strict=True):
        c, a = np.asarray(centre[:d], float), np.asarray(axes[:d], float)
        r = np.sqrt(np.sum(((points - c) / a) ** 2, axis=-1))
        inside = 0.5 * (1.0 + np.tanh((1.0 - r) * a.mean() / _EDGE_MM))
        value += (t2 if contrast == "t2" else t1) * inside
    return value


def phantom_volume(shape, spacing, origin=None, rotation_matrix=None, transform=None,
                   contrast: str = "t1", name: str = "") -> Volume:
    """Sample the phantom on a grid; ``transform`` (fixed->moving matrix) moves it.

    With ``transform = T``, the image is ``f(T^-1(y))``: what a moving image looks like
    when ``T`` maps fixed world points to moving world points.
    """
    affine = grid_affine(shape, spacing, origin, rotation_matrix)
    axes = [np.arange(n, dtype=float) for n in shape]
    ijk = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    world = apply_affine(affine, ijk)
    if transform is not None:
        world = apply_affine(np.linalg.inv(transform), world)
    return Volume(phantom(world, contrast).astype(np.float32), affine, name=name)


def mean_error_mm(estimate: np.ndarray, truth: np.ndarray, volume: Volume) -> float:
    """Mean |T_est(x) - T_true(x)| over the voxel centres of ``volume`` (mm)."""
    points = volume.world_grid().reshape(-1, volume.ndim)
    diff = apply_affine(estimate, points) - apply_affine(truth, points)
    return float(np.linalg.norm(diff, axis=1).mean())


def oblique_landmark_nifti(path) -> np.ndarray:
    """Write a NIfTI rotated 30 deg about z and 20 deg about x (not axis-aligned) to
    ``path``: background 0, a 100 block, and one bright 3x3x3 voxel block whose centre is
    a known landmark; returns that landmark (world RAS mm)."""
    import nibabel as nib
    from scipy.spatial.transform import Rotation

    data = np.zeros((40, 36, 32), np.float32)
    data[4:36, 4:32, 4:28] = 100.0
    data[24:27, 10:13, 8:11] = 1000.0  # landmark block, centre voxel (25, 11, 9)
    affine = np.eye(4)
    affine[:3, :3] = Rotation.from_euler("zx", [30, 20], degrees=True).as_matrix() \
        @ np.diag([1.5, 1.5, 2.0])
    affine[:3, 3] = [-20.0, 10.0, 5.0]
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return affine[:3, :3] @ [25, 11, 9] + affine[:3, 3]
