"""Volume <-> napari layer conversions (used by the reader, the writer and the widgets).

napari's world coordinates *are* our world coordinates: a layer's ``data`` is the voxel
array in file order ``(i, j, k)`` and its ``affine`` is the volume's voxel->world matrix
(RAS+, mm), so world axis 0 is x (left->right), 1 is y (posterior->anterior), 2 is z
(inferior->superior), and layers on different grids line up. Scale, translate, rotate
and shear are left at their defaults by this module; :func:`layer_world_affine` still
folds them in when a user set them, so a layer is always read back with the transform
napari actually displays: ``affine @ (rotate @ shear @ diag(scale) + translate)``.

A 4D stack (``(X, Y, Z, N)`` from :func:`napari_reg.io.volumes.load_volume_stack`) becomes
a layer of shape ``(N, X, Y, Z)`` (the extra axis first, so napari's slider walks the
volumes and 3D layers align with the last three world axes) with a 5x5 affine whose first
axis has unit scale.

Layer ``metadata`` keeps what the file said: ``original_affine`` (4x4), ``header`` (a
nibabel header), ``source_path``, ``format``, ``stored_dtype``; a stack also has
``stack_axis``.

Oblique volumes (voxel axes not along world axes): napari cannot slice them (issue
#7310), so the layer shows an axis-aligned display copy (:mod:`napari_reg.display_grid`):
``data`` is that copy and ``affine`` its axis-aligned grid. The metadata then also holds
``source_data`` (the original array), ``display_grid_affine`` (the copy's grid when it was
made) and ``display_shape``; :func:`volume_from_layer` and :func:`source_world_affine`
map such a layer back to the original voxels, so registration, export and the writer see
the file's data and affine (plus any move the user made to the layer since).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from napari_reg.core.image import Volume, VolumeError
from napari_reg.display_grid import display_copy

__all__ = [
    "SPATIAL_AXIS_LABELS",
    "is_label_map",
    "layer_world_affine",
    "shows_display_copy",
    "source_world_affine",
    "stack_from_layer_data",
    "stack_to_layer_data",
    "state_world_affine",
    "volume_from_layer",
    "volume_from_layer_data",
    "volume_to_layer_data",
]

SPATIAL_AXIS_LABELS: tuple[str, str, str] = ("x", "y", "z")
STACK_AXIS_LABEL = "volume"

# File names that say "this is a segmentation": aseg, aparc+aseg, *_seg, *label*, ...
_LABEL_NAME = re.compile(r"(seg|label|aparc|atlas|parcel|dseg|mask)", re.IGNORECASE)
# An integer image with at most this many distinct values is treated as a label map.
_MAX_LABEL_VALUES = 64

LayerDataTuple = tuple[Any, dict, str]


def is_label_map(data: np.ndarray, name: str = "") -> bool:
    """Guess whether an integer array is a label map (segmentation) rather than an image.

    Integer dtype is required (scaled or float data are intensities). Then either the
    name says so (``seg``, ``label``, ``aseg``, ``aparc``, ``atlas``, ``mask``, ...) or the
    array has few distinct values (at most 64, e.g. a tissue map or a binary mask; an
    8-bit T1 has well over 100).
    """
    data = np.asarray(data)
    if data.dtype.kind not in "iub" or data.size == 0:
        return False
    if _LABEL_NAME.search(name or ""):
        return True
    # A strided sample rejects ordinary images quickly without a full np.unique.
    sample = data.reshape(-1)[:: max(1, data.size // 200_000)]
    if np.unique(sample).size > _MAX_LABEL_VALUES:
        return False
    return np.unique(data).size <= _MAX_LABEL_VALUES


def _contrast_limits(data: np.ndarray) -> list[float]:
    """Robust display range (0.5 and 99.5 percentiles of a sample) so a few hot voxels
    do not make the image look black."""
    sample = np.asarray(data).reshape(-1)[:: max(1, data.size // 500_000)]
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return [0.0, 1.0]
    lo, hi = np.percentile(sample, [0.5, 99.5]).astype(float)
    if not hi > lo:
        lo, hi = float(sample.min()), float(sample.max())
    if not hi > lo:
        hi = lo + 1.0
    return [lo, hi]


def volume_to_layer_data(
    volume: Volume, layer_type: str | None = None, **kwargs: Any
) -> LayerDataTuple:
    """``(data, layer kwargs, layer type)`` for a Volume, placed in world space.

    ``layer_type`` is ``"image"``, ``"labels"`` or None (guess with :func:`is_label_map`).
    ``kwargs`` are extra layer keyword arguments (colormap, blending, ...); they win over
    the defaults chosen here. The layer's ``affine`` is ``volume.affine`` (voxel->world,
    RAS mm); ``metadata`` is a copy of ``volume.metadata`` plus ``original_affine``.
    """
    if layer_type is None:
        layer_type = "labels" if is_label_map(volume.data, volume.name) else "image"
    if layer_type not in ("image", "labels"):
        raise ValueError(f"layer_type must be 'image' or 'labels', not {layer_type!r}")
    metadata = dict(volume.metadata)
    metadata.setdefault("original_affine", volume.affine.copy())
    data = volume.data
    if layer_type == "labels" and data.dtype.kind not in "iu":
        data = data.astype(np.int32)
    shown = display_copy(Volume(data, volume.affine, volume.name), labels=layer_type == "labels")
    if shown.kind != "as_is":
        metadata.update(_display_metadata(data, shown.data, shown.affine))
    meta: dict[str, Any] = {
        "name": volume.name or "volume",
        "affine": shown.affine.copy(),
        "metadata": metadata,
        "axis_labels": SPATIAL_AXIS_LABELS[: volume.ndim],
    }
    data = shown.data
    if layer_type == "image":
        meta["contrast_limits"] = _contrast_limits(data)
    meta.update(kwargs)
    return data, meta, layer_type


def _display_metadata(source: np.ndarray, shown: np.ndarray, grid: np.ndarray) -> dict:
    """Metadata that maps a display copy back to its source array (see module doc)."""
    return {"source_data": source, "display_grid_affine": np.asarray(grid, float).copy(),
            "display_shape": tuple(shown.shape)}


def _shows_display_copy(data: Any, metadata: dict) -> bool:
    """True when ``data`` is still the display copy described by ``metadata``."""
    if metadata.get("source_data") is None or metadata.get("display_grid_affine") is None:
        return False
    shape = np.shape(data[0] if isinstance(data, list | tuple) else data)
    return tuple(shape) == tuple(metadata.get("display_shape", ()))


def _source_affine(shown_matrix: np.ndarray, metadata: dict) -> np.ndarray:
    """Voxel->world of the source array, moved as the display copy has been moved:
    ``shown @ grid^-1 @ original`` (equal to the file's affine until the user moves it)."""
    grid = np.asarray(metadata["display_grid_affine"], dtype=np.float64)
    original = np.asarray(metadata["original_affine"], dtype=np.float64)
    return shown_matrix @ np.linalg.inv(grid) @ original


def stack_to_layer_data(
    data: np.ndarray, affine: np.ndarray, metadata: dict, name: str, **kwargs: Any
) -> LayerDataTuple:
    """Layer data for a stack ``(X, Y, Z, N)``: shape ``(N, X, Y, Z)`` with a 5x5 affine.

    The extra (volume/time) axis gets unit scale and no offset; the spatial block is the
    4x4 voxel->world (RAS mm) ``affine``. A 3D array is passed to
    :func:`volume_to_layer_data` unchanged.
    """
    data = np.asarray(data)
    if data.ndim == 3:
        return volume_to_layer_data(Volume(data, affine, name, dict(metadata)), **kwargs)
    if data.ndim != 4:
        raise VolumeError(f"'{name}': expected a 3D volume or a 4D stack, got shape {data.shape}")
    stacked = np.moveaxis(data, 3, 0)
    metadata = dict(metadata)
    metadata.setdefault("original_affine", np.asarray(affine, dtype=float).copy())
    metadata["stack_axis"] = STACK_AXIS_LABEL
    labels = is_label_map(data, name)
    # each volume of an oblique stack gets the same axis-aligned display grid
    copies = [display_copy(Volume(v, affine), labels=labels) for v in stacked]
    if copies and copies[0].kind != "as_is":
        source, stacked, affine = stacked, np.stack([c.data for c in copies]), copies[0].affine
        metadata.update(_display_metadata(source, stacked, affine))
    affine5 = np.eye(5)
    affine5[1:, 1:] = affine
    meta: dict[str, Any] = {
        "name": name or "volume",
        "affine": affine5,
        "metadata": metadata,
        "axis_labels": (STACK_AXIS_LABEL, *SPATIAL_AXIS_LABELS),
    }
    if not labels:
        meta["contrast_limits"] = _contrast_limits(stacked)
    meta.update(kwargs)
    return stacked, meta, "labels" if labels else "image"


def state_world_affine(
    ndim: int,
    affine: np.ndarray | None = None,
    scale: Any = None,
    translate: Any = None,
    rotate: Any = None,
    shear: Any = None,
) -> np.ndarray:
    """The ``(ndim+1, ndim+1)`` data->world matrix napari uses for these layer properties.

    napari composes ``affine @ (rotate @ shear @ diag(scale) + translate)``; None means the
    property's default. This is what a writer receives in its ``meta`` dict.
    """
    from napari.utils.transforms import Affine

    inner = Affine(
        scale=np.ones(ndim) if scale is None else scale,
        translate=np.zeros(ndim) if translate is None else translate,
        rotate=np.eye(ndim) if rotate is None else rotate,
        shear=np.zeros(ndim * (ndim - 1) // 2) if shear is None else shear,
        ndim=ndim,
    ).affine_matrix
    outer = np.eye(ndim + 1) if affine is None else np.asarray(affine, dtype=np.float64)
    if outer.shape != (ndim + 1, ndim + 1):
        raise ValueError(f"layer affine has shape {outer.shape}, expected {(ndim + 1,) * 2}")
    return outer @ inner


def layer_world_affine(layer) -> np.ndarray:
    """The full data->world matrix of a napari layer (affine combined with scale etc.)."""
    return state_world_affine(
        layer.ndim,
        affine=layer.affine.affine_matrix,
        scale=layer.scale,
        translate=layer.translate,
        rotate=layer.rotate,
        shear=layer.shear,
    )


def stack_from_layer_data(data: Any, meta: dict) -> tuple[np.ndarray, np.ndarray]:
    """``(array (X, Y, Z, N), spatial affine 4x4)`` of a 4D stack layer's data and state.

    The inverse of :func:`stack_to_layer_data`: the first (volume) axis goes back behind
    the spatial ones. The layer's full data->world matrix must not mix the volume axis
    with space (true for what the reader produced, whatever scale the user gives it).
    """
    array = np.asarray(data[0] if isinstance(data, list | tuple) else data)
    name = str(meta.get("name", "") or "")
    if array.ndim != 4:
        raise VolumeError(f"layer '{name}' is not a 4D stack (shape {array.shape})")
    matrix = state_world_affine(4, meta.get("affine"), meta.get("scale"),
                                meta.get("translate"), meta.get("rotate"), meta.get("shear"))
    if np.any(np.abs(matrix[1:4, 0]) > 1e-9) or np.any(np.abs(matrix[0, 1:4]) > 1e-9):
        raise VolumeError(
            f"layer '{name}': its first axis is rotated into space, so it is not a stack of "
            "volumes on one grid; cannot save it as NIfTI"
        )
    metadata = meta.get("metadata") or {}
    if _shows_display_copy(array, metadata):  # save the original voxels, not the copy
        source = np.asarray(metadata["source_data"])
        return np.moveaxis(source, 0, 3), _source_affine(matrix[1:, 1:], metadata)
    return np.moveaxis(array, 0, 3), matrix[1:, 1:]


def volume_from_layer_data(data: Any, meta: dict) -> Volume:
    """A Volume from a layer's data and its state dict (what npe2 writers receive).

    ``data`` must be a 2D or 3D array (multiscale data: the full-resolution level).
    The affine is the full data->world matrix, see :func:`state_world_affine`.
    """
    if isinstance(data, list | tuple):  # multiscale: level 0 is the full resolution
        data = data[0]
    array = np.asarray(data)
    name = str(meta.get("name", "") or "")
    if array.ndim not in (2, 3):
        raise VolumeError(
            f"layer '{name}' has {array.ndim} dimensions (shape {array.shape}); a 2D image "
            "or a 3D volume is needed"
        )
    if meta.get("rgb"):
        raise VolumeError(f"layer '{name}' is an RGB image; a scalar volume is needed")
    matrix = state_world_affine(
        array.ndim,
        affine=meta.get("affine"),
        scale=meta.get("scale"),
        translate=meta.get("translate"),
        rotate=meta.get("rotate"),
        shear=meta.get("shear"),
    )
    metadata = dict(meta.get("metadata") or {})
    if _shows_display_copy(array, metadata):  # save the original voxels, not the copy
        return Volume(np.asarray(metadata["source_data"]), _source_affine(matrix, metadata),
                      name, _without_display_keys(metadata))
    return Volume(array, matrix, name, metadata)


def _without_display_keys(metadata: dict) -> dict:
    return {k: v for k, v in metadata.items()
            if k not in ("source_data", "display_grid_affine", "display_shape")}


def shows_display_copy(layer) -> bool:
    """True when ``layer`` shows an axis-aligned display copy of an oblique volume."""
    return _shows_display_copy(layer.data, getattr(layer, "metadata", None) or {})


def source_world_affine(layer) -> np.ndarray:
    """Voxel->world (RAS mm) of the array :func:`volume_from_layer` returns, as displayed.

    For an ordinary layer this is :func:`layer_world_affine`. For a layer showing a
    display copy of an oblique volume it is the source array's affine, carried along by
    any move the user gave the layer, so manual alignment works the same for both.
    """
    metadata = getattr(layer, "metadata", None) or {}
    shown = layer_world_affine(layer)
    if _shows_display_copy(layer.data, metadata):
        return _source_affine(shown, metadata)
    return shown


def volume_from_layer(layer) -> Volume:
    """A Volume from a napari Image/Labels layer: its data and its full world affine.

    The result's affine maps voxel indices of ``layer.data`` to world RAS mm exactly as
    napari displays it. Metadata is a shallow copy of ``layer.metadata``. A layer showing
    a display copy of an oblique volume gives the original array with
    :func:`source_world_affine` instead.
    """
    data = layer.data
    if getattr(layer, "multiscale", False):
        data = data[0]
    array = np.asarray(data)
    if array.ndim not in (2, 3):
        raise VolumeError(
            f"layer '{layer.name}' has {array.ndim} dimensions (shape {array.shape}); a 2D "
            "image or a 3D volume is needed"
        )
    if getattr(layer, "rgb", False):
        raise VolumeError(f"layer '{layer.name}' is an RGB image; a scalar volume is needed")
    metadata = dict(layer.metadata)
    if _shows_display_copy(layer.data, metadata):  # the original voxels, not the copy
        return Volume(np.asarray(metadata["source_data"]), source_world_affine(layer),
                      layer.name, _without_display_keys(metadata))
    return Volume(array, layer_world_affine(layer), layer.name, metadata)
