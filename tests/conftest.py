"""Shared fixtures: real test files (nibabel's) and small synthetic volumes on disk.

Geometry in all fixtures: affines map voxel indices to world RAS millimetres.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest


@pytest.fixture(scope="session")
def nibabel_data() -> Path:
    """nibabel's bundled test-data directory (anatomical.nii, example4d.nii.gz, ...)."""
    return Path(nib.__file__).parent / "tests" / "data"


def _oblique_affine() -> np.ndarray:
    """A voxel->world matrix with rotation about an oblique axis, anisotropic spacing
    (1.2, 0.9, 2.5 mm), a flipped first axis and an offset."""
    angle = np.deg2rad(23.0)
    u = np.array([1.0, 2.0, 0.5]) / np.linalg.norm([1.0, 2.0, 0.5])
    k = np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]])
    rot = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([-1.2, 0.9, 2.5])
    affine[:3, 3] = [31.5, -17.25, 8.0]
    return affine


@pytest.fixture
def oblique_file(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """``(path, data, affine)`` of a small float32 NIfTI on an oblique, anisotropic,
    flipped grid; voxel values encode their index (100*i + 10*j + k)."""
    shape = (12, 10, 7)
    i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    data = (100.0 * i + 10.0 * j + k).astype(np.float32)
    affine = _oblique_affine()
    path = tmp_path / "oblique.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path, data, affine


@pytest.fixture
def oblique_matrix() -> np.ndarray:
    """The 4x4 voxel->world matrix of :func:`oblique_file` (oblique, anisotropic, flipped)."""
    return _oblique_affine()


def _write_broken(kind: str, directory: Path) -> Path:
    if kind == "empty":
        path = directory / "empty.nii"
        path.write_bytes(b"")
    elif kind == "corrupt":
        path = directory / "corrupt.nii"
        path.write_bytes(b"this is not a NIfTI header " * 40)
    elif kind == "truncated":
        good = directory / "good.nii"
        nib.save(nib.Nifti1Image(np.ones((20, 20, 20), np.float32), np.eye(4)), str(good))
        payload = gzip.compress(good.read_bytes())
        good.unlink()
        path = directory / "truncated.nii.gz"
        path.write_bytes(payload[: len(payload) // 2])
    elif kind == "singular":
        img = nib.Nifti1Image(np.ones((3, 3, 3), np.float32), np.eye(4))
        singular = np.array([[1.0, 0, 0, 0], [2.0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
        img.set_sform(singular, code=1)
        path = directory / "singular.nii"
        nib.save(img, str(path))
    else:
        raise ValueError(kind)
    return path


@pytest.fixture
def make_broken_file(tmp_path: Path):
    """``make(kind) -> path`` of a broken volume file in ``tmp_path``. Kinds: ``empty``
    (0 bytes), ``corrupt`` (not a header), ``truncated`` (.nii.gz cut in half),
    ``singular`` (valid file whose sform is not invertible)."""
    return lambda kind: _write_broken(kind, tmp_path)
