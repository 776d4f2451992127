"""Landmark layers: made on an image, and to / from landmark files (CSV, Slicer .fcsv /
.mrk.json, through io.landmarks).

Files hold world RAS mm (Slicer files: LPS or RAS as they say). A landmark layer made
here has no affine (napari's world = RAS mm): its data are where the points are shown,
and ``metadata['original_affine']`` maps them to where the image's file puts them
(identity until the image is aligned by hand; see ``_lm_model``), so reading converts
world -> shown with its inverse. No layer affine, so nothing for napari to slice
obliquely, whatever the image's voxel axes or alignment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..core.image import apply_affine
from ..io.landmarks import Landmarks, read_landmarks, write_landmarks
from ._layer_volumes import display_to_world, file_affine, placed_affine
from ._lm_model import ids_of, world_points

__all__ = ["add_landmark_layer", "follow_image", "image_of", "pair_paths", "save_pair",
           "read_for_layer", "outside"]


def add_landmark_layer(viewer: Any, image: Any, side: str, colour: str) -> Any:
    """An empty Points layer ``"<side> landmarks"`` for ``image``, in world mm.

    No affine: a point's data are where it is shown (world RAS mm, where ``image`` is
    shown); ``metadata['original_affine']`` is
    :func:`~napari_reg.widgets._layer_volumes.display_to_world` of the image (world RAS
    mm of a point, see ``_lm_model``). An ``id`` feature shown as text; 4 mm large.
    """
    return viewer.add_points(
        np.zeros((0, image.ndim)), ndim=image.ndim, name=f"{side} landmarks",
        features={"id": np.array([], dtype=object)},
        text={"string": "{id}", "color": colour, "size": 10, "anchor": "upper_left"},
        face_color=colour, border_color="black", size=4.0,
        axis_labels=tuple("xyz"[: image.ndim]),
        metadata={"original_affine": display_to_world(image), "napari_reg_side": side})


def image_of(layer: Any, session: Any) -> Any:
    """The session's image a landmark layer of ours sits on (its ``napari_reg_side``),
    or None for another Points layer (or None)."""
    side = layer.metadata.get("napari_reg_side") if layer is not None else None
    return {"fixed": session.fixed_layer, "moving": session.moving_layer}.get(side)


def follow_image(layer: Any, image: Any) -> np.ndarray | None:
    """Once ``image`` is shown elsewhere (a hand alignment): the matrix taking ``layer``'s
    data to where the image now shows the same world points (homogeneous, world mm), after
    updating its ``original_affine``; None when nothing moved."""
    now = display_to_world(image)
    before = np.asarray(layer.metadata.get("original_affine", now), dtype=np.float64)
    if before.shape == now.shape and np.allclose(before, now, atol=1e-12):
        return None
    layer.metadata["original_affine"] = now
    return np.linalg.inv(now) @ before


def pair_paths(path: str | Path) -> tuple[Path, Path]:
    """``name.ext`` -> (``name_fixed.ext``, ``name_moving.ext``); ``.mrk.json`` kept whole,
    no extension means ``.csv``."""
    path = Path(path)
    name = path.name
    ext = ".mrk.json" if name.lower().endswith(".mrk.json") else path.suffix
    stem = name[: len(name) - len(ext)] if ext else name
    ext = ext or ".csv"
    return path.with_name(f"{stem}_fixed{ext}"), path.with_name(f"{stem}_moving{ext}")


def save_pair(fixed_layer: Any, moving_layer: Any, path: str | Path,
              coordinate_system: str = "LPS") -> tuple[Path, Path]:
    """Write both landmark layers next to ``path`` (see :func:`pair_paths`), world RAS mm."""
    targets = pair_paths(path)
    for side, layer in (("fixed", fixed_layer), ("moving", moving_layer)):
        if layer is None or len(layer.data) == 0:
            raise ValueError(f"There are no {side} landmarks to save.")
    for layer, target in zip((fixed_layer, moving_layer), targets, strict=True):
        write_landmarks(Landmarks(ids_of(layer), world_points(layer)), target,
                        coordinate_system=coordinate_system)
    return targets


def read_for_layer(path: str | Path, layer: Any) -> tuple[np.ndarray, list[str]]:
    """``(layer data (N, d): where shown, world mm), ids)`` of a landmark file.

    Raises ValueError (``LandmarkFileError`` naming file and problem, or a dimension
    mismatch).
    """
    landmarks = read_landmarks(path)
    if landmarks.ndim != layer.ndim:
        raise ValueError(f"{Path(path).name} holds {landmarks.ndim}D landmarks but the layer "
                         f"'{layer.name}' is {layer.ndim}D.")
    data = apply_affine(np.linalg.inv(file_affine(layer)), landmarks.points)
    return data, list(landmarks.ids)


def outside(data: np.ndarray, ids: list[str], image: Any) -> list[str]:
    """Ids of points (where shown, world mm) outside ``image``'s voxel grid as the image
    is shown (half a voxel of slack)."""
    if not len(data):
        return []
    voxels = apply_affine(np.linalg.inv(placed_affine(image)), np.asarray(data, float))
    shape = np.asarray(image.data.shape[-data.shape[1]:])
    return [i for i, p in zip(ids, voxels, strict=True)
            if np.any(p < -0.5) or np.any(p > shape - 0.5)]
