"""Layers -> Volumes for the widgets: where a layer's voxels are, and where its file put them.

A napari layer's data->world transform (``affine`` combined with scale/translate/...)
is the *displayed* placement. For a layer read from a NIfTI file it starts equal to the
file's voxel->world affine (RAS mm), kept in ``layer.metadata['original_affine']`` by
the reader; if the user then moves the layer by hand, the difference between the two is
the "current manual alignment" that can start a registration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..core.image import Volume, apply_affine
from ..layers import layer_world_affine, shows_display_copy, volume_from_layer

__all__ = ["layer_affine", "file_affine", "layer_volume", "manual_initial", "paired_landmarks",
           "points_world", "source_path"]


def layer_affine(layer: Any) -> np.ndarray:
    """The layer's full data->world matrix as displayed (homogeneous, world mm).

    napari composes ``affine`` with ``scale``/``translate``/``rotate``/``shear``; the
    composition is what places voxels on screen, so that is what we read.
    """
    return layer_world_affine(layer)


def file_affine(layer: Any) -> np.ndarray:
    """The voxel->world affine the layer's file gave (RAS mm), else its displayed one.

    For a layer showing an axis-aligned copy of an oblique volume (see
    :mod:`napari_reg.layers`), the copy's grid as made from the file: the file's
    placement of the *displayed* array, so ``layer_affine @ file_affine^-1`` is the
    user's move for both kinds of layer (landmark layers take it as their voxel grid).
    """
    meta = getattr(layer, "metadata", None) or {}
    if shows_display_copy(layer):
        return np.asarray(meta["display_grid_affine"], dtype=np.float64)
    original = meta.get("original_affine")
    if original is not None:
        original = np.asarray(original, dtype=np.float64)
        if original.shape == layer_affine(layer).shape:
            return original
    return layer_affine(layer)


def source_path(layer: Any) -> str | None:
    """The file a layer was read from, if any."""
    path = getattr(getattr(layer, "source", None), "path", None)
    if not path:
        path = (getattr(layer, "metadata", None) or {}).get("source_path")
    return str(Path(path)) if path else None


def layer_volume(layer: Any, use_file_affine: bool = False) -> Volume:
    """A Volume sharing the layer's array, placed where the layer is displayed (for an
    oblique volume shown as an axis-aligned copy: the file's array, moved likewise).

    With ``use_file_affine`` the file's affine is used instead (the moving image of a
    registration: a manual move then becomes the ``initial`` transform, see
    :func:`manual_initial`).
    """
    volume = volume_from_layer(layer)  # checks ndim / RGB with a clear message
    if use_file_affine:
        # an oblique layer's volume is the file's own array: its own file affine
        affine = (np.asarray(layer.metadata["original_affine"], dtype=np.float64)
                  if shows_display_copy(layer) else file_affine(layer))
        volume = Volume(volume.data, affine, volume.name, volume.metadata)
    return volume


def manual_initial(fixed_layer: Any, moving_layer: Any) -> np.ndarray:
    """The fixed->moving world matrix implied by hand-moved layers (identity if none moved).

    A layer whose file puts voxel ``v`` at ``A_file v`` is shown at ``A_shown v``, i.e.
    its file world is displaced by ``S = A_shown A_file^-1``. A fixed point ``x`` and a
    moving point ``y`` that the user has made coincide on screen satisfy
    ``S_f x = S_m y``, so ``T = S_m^-1 S_f`` (fixed file world -> moving file world).
    """
    s_fixed = layer_affine(fixed_layer) @ np.linalg.inv(file_affine(fixed_layer))
    s_moving = layer_affine(moving_layer) @ np.linalg.inv(file_affine(moving_layer))
    return np.linalg.inv(s_moving) @ s_fixed


def points_world(layer: Any) -> np.ndarray:
    """A Points layer's points in world mm, ``(N, d)``.

    Through the file's affine, not the displayed one: a landmark layer follows its
    image's manual alignment on screen, but its points stay where the file put them.
    """
    data = np.asarray(layer.data, dtype=np.float64)
    if data.size == 0:
        return data.reshape(0, layer.ndim)
    return apply_affine(file_affine(layer), data)


def _ids(layer: Any) -> list | None:
    """The layer's landmark ids (``id`` feature), or None when it has none."""
    features = getattr(layer, "features", None)
    if features is None or "id" not in getattr(features, "columns", ()):
        return None
    return list(features["id"])


def paired_landmarks(fixed_layer: Any, moving_layer: Any) -> tuple[np.ndarray, np.ndarray]:
    """Paired world points ``(fixed (N, d), moving (N, d))`` in RAS mm from two Points layers.

    Pairs are explicit when both layers have an ``id`` feature (order and unpaired extra
    points do not matter), else by order (then the counts must match).
    """
    if fixed_layer is None or moving_layer is None:
        raise ValueError("Landmark initialisation needs a fixed and a moving Points layer.")
    f_pts, m_pts = points_world(fixed_layer), points_world(moving_layer)
    f_ids, m_ids = _ids(fixed_layer), _ids(moving_layer)
    if f_ids is not None and m_ids is not None:
        m_index = {v: k for k, v in enumerate(m_ids)}
        common = [(k, m_index[i]) for k, i in enumerate(f_ids) if i in m_index]
        if len(common) < 3:
            raise ValueError(f"Only {len(common)} landmark ids appear in both "
                             f"'{fixed_layer.name}' and '{moving_layer.name}'; at least 3 "
                             "pairs are needed.")
        f_rows, m_rows = (list(rows) for rows in zip(*common, strict=True))
        return f_pts[f_rows], m_pts[m_rows]
    if len(f_pts) != len(m_pts):
        raise ValueError(f"Landmarks are paired by order: '{fixed_layer.name}' has "
                         f"{len(f_pts)} points but '{moving_layer.name}' has {len(m_pts)}.")
    return f_pts, m_pts
