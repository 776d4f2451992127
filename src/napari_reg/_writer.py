"""npe2 writers: an Image or Labels layer -> NIfTI-1 (``.nii`` / ``.nii.gz``).

The file's sform and qform are the layer's full data->world matrix (its ``affine``
combined with scale/translate/rotate/shear, world RAS mm), and its data type is the
layer's (int64 label maps become int32 when the labels fit). When the layer came from a
file, that file's header is reused for its descriptive fields and xform codes, so
read -> write -> read returns the same samples, type and affine. A 4D stack layer
``(N, X, Y, Z)`` (as the reader opens 4D files) is written back as ``(X, Y, Z, N)``.
Writes are atomic.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from napari_reg.core.image import VolumeError
from napari_reg.io.volumes import VolumeWriteError, save_volume, save_volume_stack
from napari_reg.layers import stack_from_layer_data, volume_from_layer_data

__all__ = ["write_image", "write_labels"]

_EXTENSIONS = (".nii.gz", ".nii")


def _target(path: str) -> str:
    # napari may pass a bare name when the user typed no extension: default to .nii.gz.
    return path if path.lower().endswith(_EXTENSIONS) else path + ".nii.gz"


def _write(path: str, data: Any, meta: dict) -> list[str]:
    header = (meta.get("metadata") or {}).get("header")
    target = _target(os.fspath(path))
    ndim = np.asarray(data[0] if isinstance(data, list | tuple) else data).ndim
    try:
        if ndim == 4:  # a stack (N, X, Y, Z) as the reader made it -> (X, Y, Z, N)
            stack, affine = stack_from_layer_data(data, meta)
            written = save_volume_stack(stack, affine, target, header=header)
        else:
            written = save_volume(volume_from_layer_data(data, meta), target, header=header)
    except VolumeError as exc:
        raise VolumeWriteError(f"cannot save to {path}: {exc}") from exc
    return [os.fspath(written)]


def write_image(path: str, data: Any, meta: dict) -> list[str]:
    """Save one Image layer as NIfTI (its world affine, its dtype). Returns [path]."""
    return _write(path, data, meta)


def write_labels(path: str, data: Any, meta: dict) -> list[str]:
    """Save one Labels layer as NIfTI (integer type kept, world affine). Returns [path]."""
    return _write(path, data, meta)
