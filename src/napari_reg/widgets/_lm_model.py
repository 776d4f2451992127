"""Landmark bookkeeping for the landmarks panel (no Qt): ids, pairs, undo snapshots.

A landmark layer is a napari Points layer whose ``features['id']`` column holds one
string id per point; a fixed and a moving point with the same id form a pair. Points
are stored where they are shown, in world mm (the layer has no affine), and
``layer.metadata['original_affine']`` (when present) maps them to where the image's file
puts them: the world RAS mm position of a landmark is ``original_affine @ data`` whatever
hand-made move the image shows (the convention of the registration core and of landmark
files). Layers without it (e.g. the sample data's) hold world RAS mm directly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.image import apply_affine
from ..core.initialize import fit_landmarks
from ..core.qc import target_registration_error
from ..core.thin_plate import fit_thin_plate
from ..core.transforms.base import MatrixTransform, Transform
from ._layer_volumes import file_affine

__all__ = ["PairRow", "Snapshot", "UndoStack", "FitOutcome", "fit_rows", "fit_summary", "ids_of",
           "leave_one_out", "next_id", "pair_rows", "world_points", "natural_key"]


def natural_key(value: str) -> tuple:
    """Sort key putting '2' before '10' and numbers before names."""
    parts = re.split(r"(\d+)", str(value))
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts if p != "")


def ids_of(layer: Any) -> list[str]:
    """The layer's landmark ids as strings (empty list for no points)."""
    if layer is None or len(layer.data) == 0:
        return []
    features = layer.features
    if "id" not in features.columns:
        return [str(k + 1) for k in range(len(layer.data))]
    return ["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
            for v in features["id"]]


def world_points(layer: Any) -> np.ndarray:
    """``(N, d)`` world RAS mm of a landmark layer's points (file affine, see module doc)."""
    data = np.asarray(layer.data, dtype=np.float64)
    if data.size == 0:
        return data.reshape(0, layer.ndim)
    return apply_affine(file_affine(layer), data)


def next_id(this: list[str], other: list[str]) -> str:
    """The id a new point on this side gets.

    First an id the other side has and this side lacks (the click completes that pair),
    else one more than the largest numeric id on either side ("1" to start).
    """
    have = set(this)
    missing = sorted((i for i in other if i not in have), key=natural_key)
    if missing:
        return missing[0]
    numbers = [int(i) for i in this + other if i.isdigit()]
    return str(max(numbers, default=0) + 1)


@dataclass
class PairRow:
    """One table row: an id with its fixed and/or moving world point (RAS mm)."""

    id: str
    fixed: np.ndarray | None
    moving: np.ndarray | None
    fixed_index: int | None
    moving_index: int | None
    residual: float | None = None

    @property
    def paired(self) -> bool:
        return self.fixed is not None and self.moving is not None


def pair_rows(fixed_layer: Any, moving_layer: Any) -> list[PairRow]:
    """All ids of both layers (natural order) with their points; unpaired ids included."""
    rows: dict[str, PairRow] = {}
    for side, layer in (("fixed", fixed_layer), ("moving", moving_layer)):
        if layer is None:
            continue
        pts = world_points(layer)
        for k, i in enumerate(ids_of(layer)):
            row = rows.setdefault(i, PairRow(i, None, None, None, None))
            setattr(row, side, pts[k])
            setattr(row, f"{side}_index", k)
    return [rows[i] for i in sorted(rows, key=natural_key)]


@dataclass
class Snapshot:
    """Points (data coordinates) and ids of both layers, for undo."""

    fixed_data: np.ndarray
    fixed_ids: list[str]
    moving_data: np.ndarray
    moving_ids: list[str]


class UndoStack:
    """Bounded stack of :class:`Snapshot` (newest last)."""

    def __init__(self, limit: int = 200):
        self.limit = limit
        self._items: list[Snapshot] = []

    def push(self, snap: Snapshot) -> None:
        self._items.append(snap)
        del self._items[:-self.limit]

    def pop(self) -> Snapshot | None:
        return self._items.pop() if self._items else None

    def clear(self) -> None:
        self._items.clear()

    def move_moving(self, change: np.ndarray) -> None:
        """The moving points are now shown moved by ``change`` (homogeneous): so are the
        kept states, so that an undo restores the same world points."""
        for snap in self._items:
            if len(snap.moving_data):
                snap.moving_data = apply_affine(change, snap.moving_data)

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class FitOutcome:
    """A fit of paired rows: ``transform`` (fixed world RAS mm -> moving world RAS mm),
    per-pair ``residuals`` (mm, in row order of the paired rows) and ``unpaired`` ids."""

    transform: Transform
    residuals: np.ndarray
    unpaired: list[str]
    leave_one_out: np.ndarray | None = None  # error at each pair when fitted without it


def fit_summary(result: FitOutcome, label: str) -> str:
    """One line for the panel: the fit's residuals (mm), leave-one-out error, unpaired."""
    res = result.residuals
    text = (f"{label} from {len(res)} pairs: residual mean {res.mean():.3f} mm, "
            f"max {res.max():.3f} mm")
    loo = result.leave_one_out
    if loo is not None and np.isfinite(loo).any():
        text += f"; leave-one-out mean {np.nanmean(loo):.3f} mm"
    if result.unpaired:
        text += f"; ignored unpaired: {', '.join(result.unpaired)}"
    return text


def _fit(f: np.ndarray, m: np.ndarray, kind: str, smoothing: float) -> Transform:
    if kind == "tps":
        return fit_thin_plate(f, m, smoothing=smoothing)
    return MatrixTransform(fit_landmarks(f, m, kind))


def leave_one_out(f: np.ndarray, m: np.ndarray, kind: str, smoothing: float = 0.0
                  ) -> np.ndarray:
    """``|T_-i(f_i) - m_i|`` (mm) with ``T_-i`` fitted without pair i: an honest error
    estimate where residuals are 0 by construction (splines, minimal sets). NaN where the
    remaining pairs cannot define the fit."""
    out = np.full(len(f), np.nan)
    for i in range(len(f)):
        keep = np.arange(len(f)) != i
        try:
            t = _fit(f[keep], m[keep], kind, smoothing)
        except ValueError:
            continue
        out[i] = float(np.linalg.norm(t.transform_points(f[i:i + 1])[0] - m[i]))
    return out


def fit_rows(rows: list[PairRow], kind: str, smoothing: float = 0.0) -> FitOutcome:
    """Fit ``kind`` (rigid, similarity, affine or ``tps``) to the paired rows and store each
    pair's residual ``|T(fixed) - moving|`` (mm) in its row. Unpaired rows are left out.

    Raises ValueError (``LandmarkError``) for too few or degenerate pairs.
    """
    paired = [r for r in rows if r.paired]
    if not paired:
        raise ValueError("No landmark pairs yet: click a point on the fixed image and the "
                         "same point on the moving image.")
    f = np.array([r.fixed for r in paired])
    m = np.array([r.moving for r in paired])
    fit = _fit(f, m, kind, smoothing)
    residuals = target_registration_error(fit, f, m)
    for r, res in zip(paired, residuals, strict=True):
        r.residual = float(res)
    loo = leave_one_out(f, m, kind, smoothing) if len(f) <= 200 else None
    return FitOutcome(fit, residuals, [r.id for r in rows if not r.paired], loo)
