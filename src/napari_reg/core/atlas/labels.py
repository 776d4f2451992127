"""Segmentation by registration: carry an atlas's label map onto a subject.

Conventions (never drift): a registration transform ``T`` maps **subject (fixed)** world
RAS mm to **atlas (moving)** world RAS mm, so the propagated labels are
``L_subject(x) = L_atlas(T(x))`` on the subject grid (backward warping: every subject voxel
gets exactly one label, no holes).

Two ways to read a label map at a non-grid point ``T(x)``:

* ``nearest``: the label of the closest atlas voxel. Exact for label values (no
  invented labels), but boundaries get staircase artefacts under rotation/scale.
* ``linear``: each label ``l`` is turned into its indicator image ``[L_atlas == l]``,
  interpolated linearly (a soft membership in [0, 1]), and the label with the largest
  membership wins (``argmax``). Smoother boundaries; the memberships also feed
  probabilistic fusion. Memory: one float32 map at a time (running max/argmax).

Also here: label tables (which label values an atlas uses, optional names), a check that
several atlases agree on them, Dice per label, and a guard against an intensity metric
used across modalities.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import NapariRegError
from ..image import Volume
from ..resample import resample
from ..transforms.base import MatrixTransform, Transform
from ..transforms.field import DisplacementField

__all__ = [
    "Atlas", "LabelError", "LabelTableError", "ModalityWarning", "PROPAGATION_METHODS",
    "label_values", "check_label_tables", "propagate_labels", "label_memberships", "dense_on",
    "modality_check",
]

PROPAGATION_METHODS = ("nearest", "linear")


class LabelError(NapariRegError):
    """A label map that cannot be used (not integer, wrong dimension, unknown method)."""


class LabelTableError(LabelError):
    """Atlases whose label tables (values or names) disagree."""


class ModalityWarning(UserWarning):
    """An intensity metric (SSD/SAD/NCC) used on images that look like different contrasts."""


@dataclass
class Atlas:
    """An atlas: an intensity image and its label map, on one grid or two.

    ``labels`` holds integer label values (0 = background); ``label_names`` optionally maps
    values to names (e.g. from a lookup table). Both volumes carry their own voxel->world
    RAS mm affines; they need not share a grid but must overlap in world space.
    """

    image: Volume
    labels: Volume
    name: str = ""
    label_names: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = _check_label_volume(self.labels, self.name or self.labels.name)
        if self.image.ndim != self.labels.ndim:
            raise LabelError(f"atlas '{self.name}': image is {self.image.ndim}D but its labels "
                             f"are {self.labels.ndim}D")


def _check_label_volume(labels: Volume, name: str = "") -> Volume:
    data = np.asarray(labels.data)
    what = f"label map '{name}'" if name else "label map"
    if data.dtype == bool:
        return labels.with_data(data.astype(np.uint8))
    if data.dtype.kind in "iu":
        return labels
    if data.dtype.kind == "f" and np.all(np.isfinite(data)) and np.all(data == np.round(data)):
        # NIfTI label files are often stored as float: accept whole numbers only.
        return labels.with_data(data.astype(np.int32))
    raise LabelError(f"{what} holds non-integer values (dtype {data.dtype}); labels must be "
                     "whole numbers (0 = background). Is this an intensity image?")


def label_values(labels: Volume | np.ndarray) -> np.ndarray:
    """Sorted distinct label values (background 0 included when present), int64."""
    data = labels.data if isinstance(labels, Volume) else np.asarray(labels)
    return np.unique(data).astype(np.int64)


def check_label_tables(
    atlas_labels: Sequence[Volume | np.ndarray],
    names: Sequence[str] | None = None,
    label_names: Sequence[Mapping[int, str] | None] | None = None,
) -> np.ndarray:
    """Check that every atlas uses the same label values (and names); return the values.

    Raises :class:`LabelTableError` naming the atlases and the labels that differ: fusing
    atlases that number structures differently would mix structures silently.
    """
    if not atlas_labels:
        raise LabelError("no atlas given")
    names = list(names) if names else [f"atlas {k + 1}" for k in range(len(atlas_labels))]
    tables = [set(label_values(lab).tolist()) for lab in atlas_labels]
    reference = tables[0]
    problems = []
    for name, table in zip(names[1:], tables[1:], strict=True):
        missing, extra = sorted(reference - table), sorted(table - reference)
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"lacks labels {missing}")
            if extra:
                parts.append(f"has extra labels {extra}")
            problems.append(f"'{name}' {' and '.join(parts)} compared with '{names[0]}'")
    if label_names:
        first = {int(k): str(v) for k, v in (label_names[0] or {}).items()}
        for name, table in zip(names[1:], label_names[1:], strict=True):
            for value, label_name in (table or {}).items():
                if int(value) in first and first[int(value)] != str(label_name):
                    problems.append(f"label {int(value)} is '{first[int(value)]}' in "
                                    f"'{names[0]}' but '{label_name}' in '{name}'")
    if problems:
        raise LabelTableError("the atlases' label tables disagree: " + "; ".join(problems)
                              + ". Relabel the atlases to one table before fusing them.")
    return np.array(sorted(reference), dtype=np.int64)


def _as_transform(transform: Transform | np.ndarray | None, ndim: int) -> Transform:
    if transform is None:
        return MatrixTransform(np.eye(ndim + 1))
    if isinstance(transform, np.ndarray):
        return MatrixTransform(transform)
    return transform


def dense_on(reference: Volume, transform: Transform | np.ndarray | None) -> Transform:
    """``transform`` ready for repeated warps onto ``reference``'s grid.

    A non-linear map (B-spline, velocity field, composite) is sampled once as a
    displacement field on the reference grid, so warping many label indicators (or an
    image and its labels) does not re-evaluate it each time. Linear maps pass through.
    """
    transform = _as_transform(transform, reference.ndim)
    if transform.is_linear or (isinstance(transform, DisplacementField)
                               and transform.same_grid(reference.shape, reference.affine)):
        return transform
    return DisplacementField.from_transform(transform, reference.shape, reference.affine)


def label_memberships(
    labels: Volume, reference: Volume, transform: Transform | np.ndarray | None,
    values: Sequence[int] | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Linearly interpolated indicator images, ``(values, memberships (n, *ref shape))``.

    ``memberships[k](x) = [labels == values[k]](T(x))`` in [0, 1] on the reference grid;
    points mapped outside the atlas grid count as background (label 0) when 0 is among
    ``values``. Memory: ``n`` float32 maps; prefer :func:`propagate_labels` for argmax only.
    """
    labels = _check_label_volume(labels)
    values = label_values(labels) if values is None else np.asarray(values, dtype=np.int64)
    transform = dense_on(reference, transform)
    out = np.empty((len(values),) + reference.shape, dtype=np.float32)
    for k, value in enumerate(values):
        indicator = labels.with_data((labels.data == value).astype(np.float32))
        fill = 1.0 if value == 0 else 0.0  # outside the atlas = background
        out[k] = resample(indicator, reference, transform, "linear", fill=fill).data
    return values, out


def propagate_labels(
    labels: Volume, reference: Volume, transform: Transform | np.ndarray | None = None,
    method: str = "nearest", values: Sequence[int] | np.ndarray | None = None,
) -> Volume:
    """Atlas labels on the reference (subject) grid: ``L(x) = labels(T(x))``.

    ``transform`` maps reference world RAS mm -> atlas world RAS mm (the registration
    result with the subject as fixed image); None means both already share world space.
    ``method`` is ``nearest`` or ``linear`` (per-label linear interpolation, argmax; ties
    go to the first of ``values``, sorted ascending). Points mapped outside the atlas get
    label 0. The output keeps the atlas's integer dtype.
    """
    if method not in PROPAGATION_METHODS:
        raise LabelError(f"unknown label propagation '{method}'; choose one of "
                         f"{', '.join(PROPAGATION_METHODS)}")
    labels = _check_label_volume(labels)
    if labels.ndim != reference.ndim:
        raise LabelError(f"cannot propagate {labels.ndim}D labels onto a {reference.ndim}D "
                         "subject")
    transform = _as_transform(transform, reference.ndim)
    if method == "nearest":
        out = resample(labels, reference, transform, "nearest", fill=0)
        return out.with_data(out.data, name=f"{labels.name} (propagated)")
    values = label_values(labels) if values is None else np.asarray(values, dtype=np.int64)
    transform = dense_on(reference, transform)
    best = np.full(reference.shape, -1.0, dtype=np.float32)
    winner = np.zeros(reference.shape, dtype=labels.data.dtype)
    for value in values:
        indicator = labels.with_data((labels.data == value).astype(np.float32))
        fill = 1.0 if value == 0 else 0.0
        membership = resample(indicator, reference, transform, "linear", fill=fill).data
        better = membership > best  # strict: ties keep the earlier (smaller) label
        best[better] = membership[better]
        winner[better] = value
    return Volume(winner, reference.affine.copy(), f"{labels.name} (propagated)",
                  {"propagation": "linear-argmax"})


# ------------------------------------------------------------------------ modality check
_INTENSITY_METRICS = ("ssd", "sad", "ncc")


def modality_check(fixed: Volume, moving: Volume, metric: str,
                   transform: Transform | np.ndarray | None = None,
                   threshold: float = 0.3, warn: bool = True) -> str | None:
    """Warn when ``metric`` assumes one contrast but the images look like two.

    SSD/SAD assume equal intensities and NCC a linear relation; T1 vs T2 breaks both (the
    registration then converges somewhere wrong without any error). Test: the correlation
    of the two images over the fixed foreground, the moving image mapped with
    ``transform`` (fixed->moving world mm; identity if None), on a coarse grid. Below
    ``threshold`` the message (also returned) asks for ``metric='mi'``. MI/NMI pass.
    """
    if metric.lower() not in _INTENSITY_METRICS:
        return None
    step = [max(1, n // 48) for n in fixed.shape]
    coarse_affine = fixed.affine.copy()
    coarse_affine[:-1, :-1] = fixed.affine[:-1, :-1] * np.asarray(step, dtype=float)
    coarse = Volume(np.asarray(fixed.data)[tuple(slice(None, None, s) for s in step)],
                    coarse_affine, fixed.name)
    warped = resample(moving, coarse, _as_transform(transform, fixed.ndim), "linear",
                      fill=np.nan).data.astype(np.float64)
    f = coarse.data.astype(np.float64)
    lo, hi = np.percentile(f, [1, 99])
    keep = np.isfinite(warped) & (f > lo + 0.05 * (hi - lo))
    if np.count_nonzero(keep) < 20 or np.std(f[keep]) == 0 or np.std(warped[keep]) == 0:
        return None
    r = float(np.corrcoef(f[keep], warped[keep])[0, 1])
    if r >= threshold:
        return None
    message = (f"'{fixed.name or 'fixed'}' and '{moving.name or 'moving'}' look like different "
               f"contrasts (intensity correlation {r:.2f} after alignment), but metric "
               f"'{metric}' assumes the same contrast: use metric='mi' (mutual information)")
    if warn:
        warnings.warn(message, ModalityWarning, stacklevel=2)
    return message

