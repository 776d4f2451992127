"""Multi-atlas segmentation: register several atlases to a subject and fuse their labels.

Each atlas ``i`` is registered with the subject as FIXED image, giving ``T_i`` (subject
world RAS mm -> atlas world RAS mm); its labels are propagated onto the subject grid
(:func:`napari_reg.core.atlas.labels.propagate_labels`) and its image warped there,
``W_i(x) = atlas_i(T_i(x))``. The propagated label maps then vote at every voxel:

* ``majority``: each atlas has one vote; the most voted label wins.
* ``weighted`` (locally weighted voting): atlas ``i``'s vote at ``x`` weighs
  ``w_i(x)``, from how well ``W_i`` matches the subject in a window around ``x``
  (atlases that are locally well registered, and locally similar, count more):

  - ``lncc``: local normalised cross-correlation ``r_i(x)`` in a box window,
    ``w_i = max(r_i, 0) ** beta + 0.001`` (the floor turns flat windows into a majority
    vote);
  - ``lssd``: local mean squared difference ``s_i(x)`` of globally standardised images
    (zero mean, unit variance over the subject's foreground), ``w_i = (s_i + eps) ** -beta``
    (inverse-distance weighting, as in Artaechevarria et al. 2009).

Ties go to the smaller label value (labels are visited in ascending order and only a
strictly larger score replaces the current winner): deterministic and documented.
Windows are given in mm (``radius_mm``) and turned into voxels per axis through the
subject's spacing, so anisotropic grids get a physically round window.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from ..image import Volume
from ..initialize import init_center_of_mass
from ..optimize import CancelToken
from ..qc import dice_per_label
from ..resample import resample
from ..transforms.base import Transform
from .labels import (
    Atlas,
    LabelError,
    check_label_tables,
    dense_on,
    modality_check,
    propagate_labels,
)

__all__ = ["FUSION_METHODS", "SIMILARITIES", "AtlasProgress", "SegmentationResult",
           "majority_vote", "local_similarity", "similarity_weights", "weighted_vote",
           "fuse_labels", "segment_with_atlases", "dice_table"]

FUSION_METHODS = ("majority", "weighted")
SIMILARITIES = ("lncc", "lssd")


@dataclass(frozen=True)
class AtlasProgress:
    """Progress of a multi-atlas run, handed to the caller's callback.

    ``phase`` is ``register`` (``event`` is the registration driver's ProgressEvent),
    ``propagate`` (atlas ``atlas_index`` registered, labels being carried over), ``fuse``
    (all atlases done, votes being counted) or ``done``.
    """

    atlas_index: int
    n_atlases: int
    phase: str
    event: Any = None


@dataclass
class SegmentationResult:
    """Fused labels on the subject grid, and what produced them.

    ``transforms[i]`` maps subject world RAS mm -> atlas ``i`` world RAS mm.
    ``confidence`` is the winning label's share of the (weighted) votes, in [0, 1].
    ``dice`` maps ``"fused"`` and each atlas name to ``{label: Dice}`` when a ground truth
    was given. ``notes`` holds warnings for the user (e.g. a metric/modality mismatch).
    """

    labels: Volume
    confidence: Volume
    atlas_labels: list[Volume]
    warped_images: list[Volume]
    transforms: list[Transform]
    values: np.ndarray
    method: str
    dice: dict[str, dict[int, float]] | None = None
    notes: list[str] = field(default_factory=list)
    results: list[Any] = field(default_factory=list)


# ------------------------------------------------------------------------ voting rules
def _stack(label_maps: Sequence[Volume | np.ndarray]) -> list[np.ndarray]:
    arrays = [np.asarray(m.data if isinstance(m, Volume) else m) for m in label_maps]
    if not arrays:
        raise LabelError("no label map to fuse")
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise LabelError(f"label maps to fuse must share one grid; got shapes {sorted(shapes)}")
    return arrays


def _vote(arrays: list[np.ndarray], weights: Sequence[np.ndarray | float],
          values: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Weighted vote: (winning label, winner's share of the total weight)."""
    if values is None:
        values = np.unique(np.concatenate([np.unique(a) for a in arrays]))
    values = np.sort(np.asarray(values, dtype=np.int64))
    shape = arrays[0].shape
    best = np.full(shape, -np.inf, dtype=np.float64)
    winner = np.zeros(shape, dtype=np.result_type(*[a.dtype for a in arrays]))
    total = np.zeros(shape, dtype=np.float64)
    for value in values:
        score = np.zeros(shape, dtype=np.float64)
        for labels, weight in zip(arrays, weights, strict=True):
            score += np.where(labels == value, weight, 0.0)
        total += score
        better = score > best
        best[better] = score[better]
        winner[better] = value
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(total > 0, best / total, 0.0)
    return winner, share.astype(np.float32)


def majority_vote(label_maps: Sequence[Volume | np.ndarray],
                  values: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """Per-voxel most frequent label of equally weighted maps (ties: smaller label)."""
    arrays = _stack(label_maps)
    return _vote(arrays, [1.0] * len(arrays), None if values is None else np.asarray(values))[0]


def weighted_vote(label_maps: Sequence[Volume | np.ndarray], weights: Sequence[np.ndarray],
                  values: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """Per-voxel label with the largest sum of weights (ties: smaller label).

    ``weights[i]`` is a non-negative array on the label maps' grid (or a scalar).
    """
    arrays = _stack(label_maps)
    if len(weights) != len(arrays):
        raise LabelError(f"{len(arrays)} label maps but {len(weights)} weight maps")
    for w in weights:
        if np.any(np.asarray(w) < 0) or not np.all(np.isfinite(w)):
            raise LabelError("voting weights must be finite and non-negative")
    return _vote(arrays, weights, None if values is None else np.asarray(values))[0]


def _window(reference: Volume, radius_mm: float) -> list[int]:
    """Box sizes (odd voxel counts) per axis covering +-radius_mm."""
    if not np.isfinite(radius_mm) or radius_mm <= 0:
        raise LabelError(f"the similarity window radius must be > 0 mm, got {radius_mm}")
    return [2 * max(1, int(round(radius_mm / s))) + 1 for s in reference.spacing]


def _standardise(data: np.ndarray, mask: np.ndarray) -> np.ndarray:
    values = data[mask] if mask.any() else data.ravel()
    std = float(values.std())
    return (data - float(values.mean())) / (std if std > 0 else 1.0)


def local_similarity(subject: Volume, warped: Volume | np.ndarray, measure: str = "lncc",
                     radius_mm: float = 3.0) -> np.ndarray:
    """Local similarity map of a warped atlas image and the subject (same grid).

    ``lncc``: local correlation in [-1, 1] (1 = locally identical up to a linear intensity
    change). ``lssd``: local mean squared difference of the globally standardised images
    (0 = identical; unitless). Box window of +-``radius_mm`` along each axis.
    """
    if measure not in SIMILARITIES:
        raise LabelError(f"unknown local similarity '{measure}'; choose one of "
                         f"{', '.join(SIMILARITIES)}")
    f = np.asarray(subject.data, dtype=np.float64)
    w = np.asarray(warped.data if isinstance(warped, Volume) else warped, dtype=np.float64)
    if f.shape != w.shape:
        raise LabelError(f"warped atlas {w.shape} is not on the subject grid {f.shape}")
    size = _window(subject, radius_mm)

    def box(x: np.ndarray) -> np.ndarray:
        return ndimage.uniform_filter(x, size=size, mode="nearest")

    if measure == "lssd":
        lo, hi = np.percentile(f, [1, 99])
        foreground = f > lo + 0.05 * (hi - lo)
        return box((_standardise(f, foreground) - _standardise(w, foreground)) ** 2)
    mf, mw = box(f), box(w)
    cov = box(f * w) - mf * mw
    vf = np.maximum(box(f * f) - mf * mf, 0.0)
    vw = np.maximum(box(w * w) - mw * mw, 0.0)
    # eps: a flat window (background) has no structure to compare: correlation 0 there.
    eps = 1e-6 * max(float(np.var(f)), 1e-12) * max(float(np.var(w)), 1e-12)
    return cov / np.sqrt(vf * vw + eps)


def similarity_weights(subject: Volume, warped_images: Sequence[Volume | np.ndarray],
                       measure: str = "lncc", radius_mm: float = 3.0,
                       beta: float = 2.0) -> list[np.ndarray]:
    """Voting weights from local similarity (see the module docstring), one map per atlas."""
    if not np.isfinite(beta) or beta <= 0:
        raise LabelError(f"beta (weight sharpness) must be > 0, got {beta}")
    weights = []
    for warped in warped_images:
        sim = local_similarity(subject, warped, measure, radius_mm)
        if measure == "lncc":
            # The floor: where no atlas correlates (flat windows) every vote still counts
            # a little, so such voxels fall back to a majority vote instead of label 0.
            weights.append(np.maximum(sim, 0.0) ** beta + 1e-3)
        else:
            weights.append((sim + 1e-3) ** -beta)
    return weights


def fuse_labels(label_maps: Sequence[Volume], method: str = "weighted",
                subject: Volume | None = None,
                warped_images: Sequence[Volume] | None = None,
                values: Sequence[int] | np.ndarray | None = None, similarity: str = "lncc",
                radius_mm: float = 3.0, beta: float = 2.0) -> tuple[Volume, Volume]:
    """Fuse propagated label maps on the subject grid: ``(labels, confidence)`` Volumes.

    ``weighted`` needs the subject and the warped atlas images (same grid as the maps).
    """
    if method not in FUSION_METHODS:
        raise LabelError(f"unknown fusion '{method}'; choose one of {', '.join(FUSION_METHODS)}")
    arrays = _stack(label_maps)
    grid = subject if subject is not None else label_maps[0]
    vals = None if values is None else np.asarray(values)
    if method == "majority":
        weights: Sequence[Any] = [1.0] * len(arrays)
    else:
        if subject is None or warped_images is None or len(warped_images) != len(arrays):
            raise LabelError("weighted voting needs the subject image and one warped atlas "
                             "image per label map")
        weights = similarity_weights(subject, warped_images, similarity, radius_mm, beta)
    fused, share = _vote(arrays, weights, vals)
    return (Volume(fused, grid.affine.copy(), "fused labels", {"fusion": method}),
            Volume(share, grid.affine.copy(), "fusion confidence", {"fusion": method}))


# ------------------------------------------------------------------------ the pipeline
def segment_with_atlases(
    subject: Volume,
    atlases: Sequence[Atlas],
    transform: str = "affine",
    metric: str = "mi",
    propagation: str = "nearest",
    fusion: str = "weighted",
    similarity: str = "lncc",
    radius_mm: float = 3.0,
    beta: float = 2.0,
    truth: Volume | None = None,
    register_options: Mapping[str, Any] | None = None,
    callback: Callable[[AtlasProgress], None] | None = None,
    cancel: CancelToken | None = None,
    register_fn: Callable[..., Any] | None = None,
) -> SegmentationResult:
    """Register every atlas to ``subject`` (fixed), propagate and fuse their labels.

    ``transform`` and ``register_options`` go to :func:`napari_reg.register`
    unchanged (so deformable stages work as soon as the driver offers them). With one
    atlas the result is that atlas's propagated labels. ``truth`` (labels on the subject
    grid) adds a Dice report per label for the fused map and for every single atlas.
    Label tables must agree across atlases (:class:`~.labels.LabelTableError` otherwise).
    """
    if not atlases:
        raise LabelError("at least one atlas (image + labels) is needed")
    if fusion not in FUSION_METHODS:
        raise LabelError(f"unknown fusion '{fusion}'; choose one of {', '.join(FUSION_METHODS)}")
    names = [a.name or f"atlas {k + 1}" for k, a in enumerate(atlases)]
    if len(set(names)) != len(names):
        names = [f"{n} ({k + 1})" for k, n in enumerate(names)]
    values = check_label_tables([a.labels for a in atlases], names,
                                [a.label_names for a in atlases])
    if register_fn is None:
        from ..engine.register import register as register_fn
    cancel = cancel or CancelToken()
    n = len(atlases)
    notes: list[str] = []
    label_maps, warped_images, transforms, results = [], [], [], []
    for k, atlas in enumerate(atlases):
        cancel.raise_if_cancelled()
        start = init_center_of_mass(subject, atlas.image)
        note = modality_check(subject, atlas.image, metric, transform=start)
        if note:
            notes.append(f"{names[k]}: {note}")

        def forward(event: Any, k: int = k) -> None:
            if callback is not None:
                callback(AtlasProgress(k, n, "register", event))

        result = register_fn(subject, atlas.image, transform=transform, metric=metric,
                             callback=forward, cancel=cancel, **dict(register_options or {}))
        if callback is not None:
            callback(AtlasProgress(k, n, "propagate"))
        transforms.append(result.transform)
        results.append(result)
        on_subject = dense_on(subject, result.transform)  # one field for labels and image
        label_maps.append(propagate_labels(atlas.labels, subject, on_subject, propagation,
                                           values))
        warped_images.append(resample(atlas.image, subject, on_subject, "linear"))
    cancel.raise_if_cancelled()
    if callback is not None:
        callback(AtlasProgress(n - 1, n, "fuse"))
    fused, confidence = fuse_labels(label_maps, fusion, subject, warped_images, values,
                                    similarity, radius_mm, beta)
    fused = fused.with_data(fused.data, name=f"{subject.name or 'subject'} labels ({fusion})")
    dice = None
    if truth is not None:
        dice = {"fused": dice_per_label(fused, truth, values)}
        for name, labels in zip(names, label_maps, strict=True):
            dice[name] = dice_per_label(labels, truth, values)
    if callback is not None:
        callback(AtlasProgress(n - 1, n, "done"))
    return SegmentationResult(fused, confidence, label_maps, warped_images, transforms,
                              values, fusion, dice, notes, results)


def dice_table(dice: Mapping[str, Mapping[int, float]],
               label_names: Mapping[int, str] | None = None) -> str:
    """A plain-text table (rows: labels, columns: fused and each atlas) of Dice values."""
    columns = list(dice)
    labels = sorted({lab for report in dice.values() for lab in report})
    label_names = label_names or {}
    header = ["label"] + columns
    rows = [header]
    for lab in labels:
        name = f"{lab} {label_names[lab]}" if lab in label_names else str(lab)
        rows.append([name] + [f"{dice[c].get(lab, float('nan')):.4f}" for c in columns])
    means = [np.nanmean([dice[c][lab] for lab in labels if lab in dice[c]] or [np.nan])
             for c in columns]
    rows.append(["mean"] + [f"{m:.4f}" for m in means])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True))
                     for r in rows)
