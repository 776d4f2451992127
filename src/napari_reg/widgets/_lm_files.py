"""Landmark layers: made on an image, and to / from landmark files (CSV, Slicer .fcsv /
.mrk.json, through io.landmarks).

Files hold world RAS mm (Slicer files: LPS or RAS as they say); layers hold voxel
coordinates of their image with the file affine in ``metadata['original_affine']``
(see ``_lm_model``), so reading converts world -> voxel with that affine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..core.image import apply_affine
from ..io.landmarks import Landmarks, read_landmarks, write_landmarks
from ._layer_volumes import file_affine, layer_affine
from ._lm_model import ids_of, world_points

__all__ = ["add_landmark_layer", "pair_paths", "save_pair", "read_for_layer", "outside"]


def add_landmark_layer(viewer: Any, image: Any, side: str, colour: str) -> Any:
    """An empty Points layer ``"<side> landmarks"`` placed like ``image``.

    It carries the image layer's displayed affine (points are voxel coordinates of the
    image, clicked where the image is shown) and the image file's affine as
    ``metadata['original_affine']`` (world RAS mm of a point, see ``_lm_model``); an
    ``id`` feature shown as text; about 4 mm large.
    """
    spacing = float(np.mean(np.linalg.norm(file_affine(image)[:-1, :-1], axis=0)))
    return viewer.add_points(
        np.zeros((0, image.ndim)), ndim=image.ndim, name=f"{side} landmarks",
        affine=layer_affine(image), features={"id": np.array([], dtype=object)},
        text={"string": "{id}", "color": colour, "size": 10, "anchor": "upper_left"},
        face_color=colour, border_color="black", size=4.0 / spacing,
        metadata={"original_affine": file_affine(image), "napari_reg_side": side})


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
    """``(voxel data (N, d), ids)`` of a landmark file for ``layer``.

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
    """Ids of voxel positions outside ``image``'s voxel grid (half a voxel of slack)."""
    shape = np.asarray(image.data.shape[-data.shape[1]:]) if len(data) else np.zeros(0)
    return [i for i, p in zip(ids, data, strict=True)
            if np.any(p < -0.5) or np.any(p > shape - 0.5)]
