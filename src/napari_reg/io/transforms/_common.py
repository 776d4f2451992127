"""Pieces every transform-file module shares: the error type, RAS <-> LPS, number parsing.

Every format module converts to and from ONE homogeneous ``(d+1, d+1)`` matrix in world
RAS mm that maps FIXED points to MOVING points (``warped(x) = moving(M x)``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ...core.errors import NapariRegError

__all__ = ["TransformFileError", "check_matrix", "homogeneous", "lps_flip", "numbers",
           "nitransforms_io", "read_bytes", "read_text", "text_rows", "write_text"]


class TransformFileError(NapariRegError):
    """A transform file that cannot be read or written (the message names file and problem)."""


def lps_flip(matrix: np.ndarray) -> np.ndarray:
    """RAS <-> LPS for a homogeneous matrix: ``L M L`` (its own inverse)."""
    d = matrix.shape[0] - 1
    flip = np.diag([-1.0, -1.0] + [1.0] * (d - 1))
    return flip @ matrix @ flip


def homogeneous(a: np.ndarray, t: np.ndarray, c: np.ndarray) -> np.ndarray:
    """ITK's ``x -> A (x - c) + c + t`` as a homogeneous matrix (offset ``t + c - A c``)."""
    d = a.shape[0]
    m = np.eye(d + 1)
    m[:d, :d] = a
    m[:d, d] = t + c - a @ c
    return m


def check_matrix(matrix: np.ndarray, what: str) -> np.ndarray:
    """A finite 3x3 (2D) or 4x4 (3D) homogeneous matrix as float64, else a clear error."""
    m = np.array(matrix, dtype=np.float64)
    if m.shape not in ((3, 3), (4, 4)):
        raise TransformFileError(f"{what}: expected a 3x3 (2D) or 4x4 (3D) homogeneous "
                                 f"matrix, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise TransformFileError(f"{what}: matrix contains NaN or infinite values")
    d = m.shape[0] - 1
    if not np.allclose(m[d], np.r_[np.zeros(d), 1.0], atol=1e-9):
        raise TransformFileError(f"{what}: last row must be (0, ..., 0, 1), got {m[d]}")
    return m


def numbers(text: str, where: str) -> np.ndarray:
    try:
        values = np.array([float(tok) for tok in text.split()], dtype=np.float64)
    except ValueError as exc:
        raise TransformFileError(f"{where}: malformed number ({exc})") from None
    if not np.all(np.isfinite(values)):
        raise TransformFileError(f"{where}: NaN or infinite value")
    return values


def read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise TransformFileError(f"{what} file not found: {path}") from None
    except IsADirectoryError:
        raise TransformFileError(f"{path} is a folder, not a {what} file") from None
    except OSError as exc:
        raise TransformFileError(f"{path}: cannot read ({exc.strerror})") from None


def read_text(path: Path, what: str) -> str:
    try:
        return read_bytes(path, what).decode("utf-8-sig")  # tolerate a BOM
    except UnicodeDecodeError:
        raise TransformFileError(f"{path}: not a text file (is it a binary .mat?)") from None


def text_rows(path: Path, what: str) -> np.ndarray:
    """The rows of a plain-text matrix file as a 2D float array.

    Blank lines and ``#`` comments are skipped, as numpy's ``loadtxt`` (which FSL- and
    greedy-matrix scripts use) does; errors name the row by its line number in the file.
    """
    text = read_text(path, what)
    lines = [(n, ln.split("#", 1)[0]) for n, ln in enumerate(text.splitlines(), start=1)]
    values = [numbers(ln, f"{path}, row {n}") for n, ln in lines if ln.strip()]
    if len(values) != 4 or any(v.size != 4 for v in values):
        raise TransformFileError(f"{path}: a {what} has 4 rows of 4 numbers, found rows of "
                                 f"{[v.size for v in values]} numbers")
    return np.array(values)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` atomically (no half-written file is ever seen)."""
    from ..atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def nitransforms_io():
    """nitransforms' ``io`` package (LTA, AFNI, X5 readers), imported on first use.

    nitransforms' RAS matrix maps reference (fixed) world points to moving world points,
    ours exactly; its readers were checked against its own test files, written by the
    real tools (FreeSurfer, AFNI; tests/test_transform_formats.py).
    """
    try:
        from nitransforms import io
    except ImportError:  # pragma: no cover - nitransforms is a dependency
        raise TransformFileError("reading LTA, AFNI and X5 transforms needs nitransforms "
                                 "(pip install nitransforms)") from None
    return io
