"""npe2 writers: an Image or Labels layer -> NIfTI-1 (``.nii`` / ``.nii.gz``).

The file's sform and qform are the layer's full data->world matrix (its ``affine``
combined with scale/translate/rotate/shear, world RAS mm), and its data type is the
layer's (int64 label maps become int32 when the labels fit). When the layer came from a
file, that file's header is reused for its descriptive fields and xform codes, so
read -> write -> read returns the same samples, type and affine. Writes are atomic.
"""

from __future__ import annotations

import os
from typing import Any

from napari_reg.core.image import VolumeError
from napari_reg.io.volumes import VolumeWriteError, save_volume
from napari_reg.layers import volume_from_layer_data

__all__ = ["write_image", "write_labels"]

_EXTENSIONS = (".nii.gz", ".nii")


def _target(path: str) -> str:
    # napari may pass a bare name when the user typed no extension: default to .nii.gz.
    return path if path.lower().endswith(_EXTENSIONS) else path + ".nii.gz"


def _write(path: str, data: Any, meta: dict) -> list[str]:
    try:
        volume = volume_from_layer_data(data, meta)
    except VolumeError as exc:
        raise VolumeWriteError(f"cannot save to {path}: {exc}") from exc
    header = (meta.get("metadata") or {}).get("header")
    written = save_volume(volume, _target(os.fspath(path)), header=header)
    return [os.fspath(written)]


def write_image(path: str, data: Any, meta: dict) -> list[str]:
    """Save one Image layer as NIfTI (its world affine, its dtype). Returns [path]."""
    return _write(path, data, meta)


def write_labels(path: str, data: Any, meta: dict) -> list[str]:
    """Save one Labels layer as NIfTI (integer type kept, world affine). Returns [path]."""
    return _write(path, data, meta)
