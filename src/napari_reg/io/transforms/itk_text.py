"""ITK text transform files (``.tfm``/``.txt``) <-> a RAS fixed->moving matrix.

ITK (and SimpleITK, ANTs, 3D Slicer) store transforms in LPS mm, in the resampling
direction: fixed/output physical point -> moving/input physical point, which is ours,
so only the sign flip ``M_lps = L M_ras L`` (``L = diag(-1, -1, 1, 1)``) happens.
We write only the standard header lines (``#Insight Transform File V1.0``,
``#Transform 0``): other tools' readers (nitransforms) split on ``#`` and fail on extra
comment lines, so provenance goes to ``run.json`` instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ._common import (
    TransformFileError,
    check_matrix,
    lps_flip,
    numbers,
    read_text,
    write_text,
)
from .itk_params import affine_parameters, itk_matrix_lps, parse_type

__all__ = ["ITK_MAGIC", "read_itk_transform", "write_itk_text"]

ITK_MAGIC = "#Insight Transform File"


def _entries(path: Path) -> list[dict]:
    text = read_text(path, "ITK transform")
    lines = text.splitlines()
    first = next((ln.strip() for ln in lines if ln.strip()), "")
    if not first.startswith(ITK_MAGIC):
        raise TransformFileError(f"{path}: not an ITK text transform file (first line must "
                                 f"start with {ITK_MAGIC!r})")
    entries: list[dict] = []
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # '#Transform N' and free comments: ITK's reader skips them too
        where = f"{path}, line {lineno}"
        key, sep, value = line.partition(":")
        if not sep:
            raise TransformFileError(f"{where}: expected 'Key: value', got {line!r}")
        key = key.strip()
        if key == "Transform":
            kind, d = parse_type(value.strip(), where)
            entries.append({"kind": kind, "d": d, "where": where})
        elif key in ("Parameters", "FixedParameters"):
            if not entries:
                raise TransformFileError(f"{where}: {key} before any 'Transform:' line")
            if key in entries[-1]:
                raise TransformFileError(f"{where}: {key} given twice for one transform")
            entries[-1][key] = numbers(value, where)
        else:
            raise TransformFileError(f"{where}: unknown key {key!r}")
    if not entries:
        raise TransformFileError(f"{path}: no 'Transform:' entry found")
    return entries


def read_itk_transform(path: str | os.PathLike) -> np.ndarray:
    """Read a linear ITK text transform (``.tfm``/``.txt``) as a RAS fixed->moving matrix.

    A ``CompositeTransform`` followed by linear components ``T1 ... Tn`` (file order) is
    composed the way ITK applies it, the LAST one first: ``M = M1 @ M2 @ ... @ Mn``.
    A plain list of several transforms (e.g. per-volume head motion) is ambiguous and
    rejected. Returns a ``(d+1, d+1)`` float64 matrix, world RAS mm.
    """
    path = Path(path)
    entries = _entries(path)
    if entries[0]["kind"] == "CompositeTransform":
        components = entries[1:]
        if not components:
            raise TransformFileError(f"{path}: CompositeTransform without components")
    elif len(entries) > 1:
        raise TransformFileError(
            f"{path}: holds {len(entries)} separate transforms (a transform list, not a "
            "CompositeTransform); cannot tell which one to use")
    else:
        components = entries
    d = entries[0]["d"]
    total = np.eye(d + 1)
    for e in components:
        if e["kind"] == "CompositeTransform":
            raise TransformFileError(f"{e['where']}: nested CompositeTransform not supported")
        if e["d"] != d:
            raise TransformFileError(f"{e['where']}: {e['d']}D component in a {d}D composite")
        if "Parameters" not in e:
            raise TransformFileError(f"{e['where']}: missing 'Parameters:' line")
        m = itk_matrix_lps(e["kind"], d, e["Parameters"],
                           e.get("FixedParameters", np.zeros(0)), e["where"])
        total = total @ m  # ITK applies the last-listed component first
    return lps_flip(total)


def write_itk_text(matrix: np.ndarray, path: str | os.PathLike) -> None:
    """Write a RAS fixed->moving matrix as an ITK text ``AffineTransform_double_d_d``.

    LPS mm, full float precision, centre 0 (so the translation is the offset); only the
    standard header lines. Maps fixed/output physical points to moving/input points:
    usable directly by ``antsApplyTransforms``, ``sitk.Resample`` and 3D Slicer.
    """
    m = lps_flip(check_matrix(matrix, f"writing {path}"))
    name, params = affine_parameters(m)
    d = m.shape[0] - 1
    lines = [
        "#Insight Transform File V1.0",
        "#Transform 0",
        f"Transform: {name}",
        "Parameters: " + " ".join(repr(float(v)) for v in params),
        "FixedParameters: " + " ".join(["0"] * d),
    ]
    write_text(path, "\n".join(lines) + "\n")
