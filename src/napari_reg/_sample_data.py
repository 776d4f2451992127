"""npe2 sample data: the shipped MNI152 T1 (fixed) / moved T2-like (moving) pair.

Works offline: the files live in ``napari_reg/data`` (see its README.md and LICENSE).
Both images are placed in napari's world (RAS mm) by their own affines, so the layers
overlay where the anatomy *is*: the moving image is visibly off by the known motion
``T_true`` (fixed world -> moving world) until it is registered.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_reg.core.image import Volume
from napari_reg.io.landmarks import read_landmarks
from napari_reg.io.volumes import load_volume
from napari_reg.layers import LayerDataTuple, volume_to_layer_data

__all__ = ["SamplePair", "load_mni_pair", "load_tissue_labels", "make_mni_pair",
           "sample_data_dir"]

FIXED_FILE = "mni_t1_fixed.nii.gz"
MOVING_FILE = "mni_t2like_moving.nii.gz"
FIXED_LANDMARKS = "fixed_landmarks.csv"
MOVING_LANDMARKS = "moving_landmarks.csv"
GROUND_TRUTH = "ground_truth_fixed_to_moving.txt"
TISSUE_LABELS = "mni_tissue_labels_fixed.nii.gz"  # 1 CSF, 2 GM, 3 WM on the fixed grid

# Display: fixed in grey, moving in a contrasting colour, added on top, so overlap reads
# as grey + magenta and misregistration shows as coloured fringes.
FIXED_STYLE = {"colormap": "gray", "blending": "translucent_no_depth"}
MOVING_STYLE = {"colormap": "magenta", "blending": "additive", "opacity": 0.6}


def sample_data_dir() -> Path:
    """Directory holding the shipped sample files."""
    return Path(__file__).resolve().parent / "data"


@dataclass
class SamplePair:
    """The sample pair with its known answer.

    ``true_fixed_to_moving`` (4x4) maps fixed world points to moving world points (RAS
    mm); ``moving_points = T_true(fixed_points)`` row for row, paired by ``landmark_ids``.
    """

    fixed: Volume
    moving: Volume
    fixed_points: np.ndarray
    moving_points: np.ndarray
    landmark_ids: np.ndarray
    true_fixed_to_moving: np.ndarray


def load_mni_pair(directory: str | Path | None = None) -> SamplePair:
    """Load the shipped pair (or the same files from ``directory``)."""
    base = sample_data_dir() if directory is None else Path(directory)
    fixed = load_volume(base / FIXED_FILE)
    moving = load_volume(base / MOVING_FILE)
    fixed.name, moving.name = "fixed (MNI T1)", "moving (T2-like)"
    pairs = read_landmarks(base / FIXED_LANDMARKS).pair_with(
        read_landmarks(base / MOVING_LANDMARKS))
    if pairs.unpaired:
        raise ValueError(f"{base}: landmarks without a partner: {', '.join(pairs.unpaired)}")
    ids = np.array([int(i) for i in pairs.ids])
    fixed_points, moving_points = pairs.fixed, pairs.moving
    truth = np.loadtxt(base / GROUND_TRUTH)
    return SamplePair(fixed, moving, fixed_points, moving_points, ids, truth)


def load_tissue_labels(directory: str | Path | None = None) -> Volume:
    """The fixed image's tissue labels (1 CSF, 2 grey matter, 3 white matter, 0 outside),
    on the fixed grid: with the fixed T1 an atlas for segmenting the moving image."""
    base = sample_data_dir() if directory is None else Path(directory)
    labels = load_volume(base / TISSUE_LABELS)
    labels = labels.with_data(np.asarray(labels.data).astype(np.int32), name="fixed tissue labels")
    return labels


def _points_layer(points: np.ndarray, ids: np.ndarray, name: str, color: str) -> LayerDataTuple:
    # A Points layer has no affine: its coordinates are world RAS mm directly.
    meta = {
        "name": name,
        "features": {"id": ids},
        "text": {"string": "{id}", "color": color, "size": 9, "anchor": "upper_left"},
        "face_color": color,
        "border_color": "black",
        "size": 4.0,
        "axis_labels": ("x", "y", "z"),
    }
    return points, meta, "points"


def make_mni_pair(with_landmarks: bool = True, with_labels: bool = True
                  ) -> list[LayerDataTuple]:
    """npe2 sample-data command: fixed (grey) and moving (magenta) layers in world space,
    plus the two landmark sets as Points layers when ``with_landmarks`` and the fixed
    image's tissue labels (hidden; the Atlas panel's demo atlas) when ``with_labels``."""
    pair = load_mni_pair()
    # Headroom above the T1's white matter so that grey + magenta does not saturate
    # to white where the two overlap.
    top = float(np.percentile(pair.fixed.data[pair.fixed.data > 0], 99.5))
    layers = [
        volume_to_layer_data(pair.fixed, "image", contrast_limits=[0.0, 1.3 * top],
                             **FIXED_STYLE),
        volume_to_layer_data(pair.moving, "image", **MOVING_STYLE),
    ]
    if with_landmarks:
        layers.append(_points_layer(pair.fixed_points, pair.landmark_ids,
                                    "fixed landmarks", "yellow"))
        layers.append(_points_layer(pair.moving_points, pair.landmark_ids,
                                    "moving landmarks", "cyan"))
    if with_labels:
        layers.append(volume_to_layer_data(load_tissue_labels(), "labels", opacity=0.4,
                                           visible=False))
    return layers
