"""Layers -> Volumes for the widgets: where a layer's voxels are, and where its file put them.

A napari layer's data->world transform (``affine`` combined with scale/translate/...)
is the *displayed* placement. For a layer read from a NIfTI file it starts equal to the
file's voxel->world affine (RAS mm), kept in ``layer.metadata['original_affine']`` by
the reader; if the user then moves the layer by hand, the difference between the two is
the "current manual alignment" that can start a registration.

The panels' own alignment (manual sliders, landmark fits) is not put into the moving
layer's ``affine``: napari cannot slice a layer rotated out of the viewed plane (napari
#7310; it warns and draws it in the wrong place). It is kept as a world->world motion in
``layer.metadata[SHOWN_MOTION_KEY]`` (the layer is then hidden behind a resampled
overlay, see ``_alignment``), and :func:`placed_affine` is where the layer's voxels are
meant to be: that motion after the layer's own transform.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..core.image import Volume, apply_affine
from ..layers import layer_world_affine, shows_display_copy, volume_from_layer

__all__ = ["SHOWN_MOTION_KEY", "display_to_world", "layer_affine", "file_affine",
           "layer_volume", "manual_initial", "paired_landmarks", "placed_affine",
           "points_world", "source_path"]

# metadata key of a world->world motion (homogeneous, RAS mm) the layer is shown moved by
SHOWN_MOTION_KEY = "napari_reg_shown_motion"


def layer_affine(layer: Any) -> np.ndarray:
    """The layer's full data->world matrix as displayed (homogeneous, world mm).

    napari composes ``affine`` with ``scale``/``translate``/``rotate``/``shear``; the
    composition is what places voxels on screen, so that is what we read.
    """
    return layer_world_affine(layer)


def placed_affine(layer: Any) -> np.ndarray:
    """Where the layer's voxels are meant to be shown (homogeneous, world mm): its napari
    transform, then the hand alignment kept in its metadata (see the module doc)."""
    motion = (getattr(layer, "metadata", None) or {}).get(SHOWN_MOTION_KEY)
    shown = layer_affine(layer)
    if motion is None or np.shape(motion) != shown.shape:
        return shown
    return np.asarray(motion, dtype=np.float64) @ shown


def display_to_world(image: Any) -> np.ndarray:
    """Matrix from where ``image`` is shown to where its file puts it (world mm):
    identity until the image is moved by hand. A landmark clicked on the shown image at
    ``p`` lies at ``display_to_world(image) @ p`` in the image's world."""
    return file_affine(image) @ np.linalg.inv(placed_affine(image))


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

    A layer whose file puts voxel ``v`` at ``A_file v`` is shown at ``A_shown v``
    (:func:`placed_affine`), i.e.
    its file world is displaced by ``S = A_shown A_file^-1``. A fixed point ``x`` and a
    moving point ``y`` that the user has made coincide on screen satisfy
    ``S_f x = S_m y``, so ``T = S_m^-1 S_f`` (fixed file world -> moving file world).
    """
    s_fixed = placed_affine(fixed_layer) @ np.linalg.inv(file_affine(fixed_layer))
    s_moving = placed_affine(moving_layer) @ np.linalg.inv(file_affine(moving_layer))
    return np.linalg.inv(s_moving) @ s_fixed


def points_world(layer: Any) -> np.ndarray:
    """A Points layer's points in world mm, ``(N, d)``.

    Through ``metadata['original_affine']`` (see :func:`file_affine`): a landmark layer's
    data are where its points are shown (world mm; they follow their image's manual
    alignment on screen), that matrix maps them to where the image's file puts them.
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
