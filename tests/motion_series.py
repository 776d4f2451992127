"""A small 4D test series with known per-frame rigid motion (the analytic phantom).

``motion[k]`` maps REFERENCE world points (frame 0, at rest) to FRAME k world points, the
direction a motion-correction transform has; frame k is the phantom moved by it.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from phantoms import homogeneous, phantom_volume, rotation

SHAPE, SPACING = (40, 36, 32), (2.0, 2.0, 2.2)
TR_S = 1.5


def known_motion(n_frames: int, seed: int = 7) -> np.ndarray:
    """(T, 4, 4) rigid maps: up to ~3 degrees and ~3 mm, frame 0 the identity."""
    rng = np.random.default_rng(seed)
    maps = [np.eye(4)]
    for _ in range(1, n_frames):
        angles = np.deg2rad(rng.uniform(-3.0, 3.0, 3))
        maps.append(homogeneous(rotation(*angles), rng.uniform(-3.0, 3.0, 3)))
    return np.stack(maps)


def write_series(path: Path, n_frames: int = 5, seed: int = 7, nan_frame: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Write the series as NIfTI with TR in the header; return ``(motion, affine)``."""
    motion = known_motion(n_frames, seed)
    frames = [phantom_volume(SHAPE, SPACING, transform=m) for m in motion]
    data = np.stack([f.data for f in frames], axis=-1).astype(np.float32)
    if nan_frame is not None:
        data[3, 4, 5, nan_frame] = np.nan
    img = nib.Nifti1Image(data, frames[0].affine)
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = TR_S
    nib.save(img, str(path))
    return motion, frames[0].affine
