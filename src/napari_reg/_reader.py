"""npe2 reader: NIfTI-1/2, MGH, Analyze and MINC volumes as layers in world space.

Each volume becomes an Image (or, for integer label maps, a Labels) layer whose napari
``affine`` is the file's voxel->world matrix (RAS+, mm; sform, else qform), so images of one
subject on different grids overlay in napari's world. 4D files open as one stack layer
(see :mod:`napari_reg.layers`).

Error policy: the reader declines (returns None) paths it does not own. For a file it owns
but cannot read (empty, corrupt, truncated, non-invertible affine) it shows one clear
message through napari's notifications and returns napari's "no layers" value
``[(None,)]``: the viewer keeps running, no second "reader returned no data" error is
raised on top of ours, and nothing is written anywhere.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from napari_reg.core.image import VolumeError
from napari_reg.io.volumes import (
    VolumeReadError,
    has_volume_extension,
    load_volume_stack,
    volume_name,
)
from napari_reg.layers import LayerDataTuple, stack_to_layer_data

__all__ = ["napari_get_reader", "read_volumes"]

# napari's sentinel for "the reader handled the path and there is nothing to add".
_NO_LAYERS: list[tuple[None]] = [(None,)]


def _paths(path: str | Sequence[str]) -> list[str]:
    return [os.fspath(path)] if isinstance(path, str | os.PathLike) else [
        os.fspath(p) for p in path
    ]


def napari_get_reader(path: str | Sequence[str]) -> Callable[..., Any] | None:
    """Return :func:`read_volumes` when every path has a volume extension, else None."""
    paths = _paths(path)
    if not paths or not all(has_volume_extension(p) for p in paths):
        return None
    return read_volumes


def read_path(path: str) -> LayerDataTuple:
    """Layer data for one file; raises VolumeReadError with a user-readable message."""
    data, affine, metadata = load_volume_stack(path)
    try:
        return stack_to_layer_data(data, affine, metadata, volume_name(path))
    except VolumeError as exc:
        raise VolumeReadError(f"{path}: {exc}") from exc


def _notify_error(message: str) -> None:
    from napari.utils.notifications import show_error

    show_error(f"napari-reg could not open a volume: {message}")


def read_volumes(path: str | Sequence[str], **_: Any) -> list:
    """Read one or more volume files into napari layer data tuples.

    Files that fail are reported (one notification each) and skipped; the others are
    still returned. When none can be read, napari's empty-result sentinel is returned.
    """
    layers: list = []
    for p in _paths(path):
        try:
            layers.append(read_path(p))
        except (VolumeReadError, MemoryError) as exc:
            _notify_error(str(exc))
    return layers or list(_NO_LAYERS)
