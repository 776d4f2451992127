"""Checks a volume file must pass BEFORE its samples are read: size and geometry.

A header is untrusted input. Its claimed data size is compared with the bytes the file
really holds (for gzip: the trailer's ISIZE, confirmed by a bounded streaming
decompression only when the trailer disagrees) and with a memory budget, so a 1 MB file
that claims 4 GB is refused in milliseconds instead of allocating 4 GB. Its geometry
(voxel sizes and the voxel->world affine, RAS mm) must be finite and physically plausible:
a 1e30 mm voxel cannot be displayed or registered.

The budget defaults to :data:`DEFAULT_BUDGET_GB` GiB of working (float32) samples; the
environment variable ``NAPARI_REG_MAX_VOLUME_GB`` raises or lowers it.
"""

from __future__ import annotations

import bz2
import math
import os
import zlib
from pathlib import Path

import numpy as np

from ..core.errors import NapariRegError

__all__ = ["DEFAULT_BUDGET_GB", "VolumeRefused", "check_claimed_size", "check_geometry",
           "memory_budget_bytes"]

DEFAULT_BUDGET_GB = 2.0
# Plausible geometry, in mm: voxels from 1 um to 1 m, coordinates and fields of view
# within 100 m. Beyond that a header is corrupt; and napari, which slices the world in
# steps of the smallest voxel, needs (world range / smallest voxel) below 2**31 for ALL
# layers together: 2e5 mm / 1e-3 mm = 2e8 keeps any mix of plausible files viewable.
MIN_VOXEL_MM, MAX_VOXEL_MM = 1e-3, 1e3
MAX_COORDINATE_MM = 1e5
# Beyond this the affine's axes are nearly parallel: a sheared, degenerate grid.
MAX_CONDITION = 1e6
_CHUNK = 1 << 20
_MAX_DEFLATE_RATIO = 1032


class VolumeRefused(NapariRegError):
    """A header refused before its data were read; the message names the file."""


def memory_budget_bytes() -> int:
    """Largest working copy (bytes) a volume may need; ``NAPARI_REG_MAX_VOLUME_GB`` sets it."""
    text = os.environ.get("NAPARI_REG_MAX_VOLUME_GB", "")
    try:
        gb = float(text) if text else DEFAULT_BUDGET_GB
    except ValueError:
        gb = DEFAULT_BUDGET_GB
    if not math.isfinite(gb) or gb <= 0:
        gb = DEFAULT_BUDGET_GB
    return int(gb * 2**30)


def _human(n: int) -> str:
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("kB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _compression(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:3] == b"BZh":
        return "bz2"
    if head == b"\x28\xb5\x2f\xfd":
        return "zstd"
    return ""


def _gzip_trailer_size(path: Path) -> int:
    """ISIZE of the last gzip member: its uncompressed size modulo 2**32."""
    with open(path, "rb") as f:
        f.seek(-4, os.SEEK_END)
        return int.from_bytes(f.read(4), "little")


def _gzip_at_least(f, needed: int) -> bool:
    produced, decoder, pending = 0, zlib.decompressobj(16 + zlib.MAX_WBITS), b""
    while produced < needed:
        if not pending:
            pending = f.read(_CHUNK)
            if not pending:
                return False
        try:
            produced += len(decoder.decompress(pending, _CHUNK))
        except zlib.error:
            return False
        if decoder.eof:  # next member (bgzip, cat a.gz b.gz); zero padding is skipped
            pending = decoder.unused_data.lstrip(b"\0")
            decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        else:
            pending = decoder.unconsumed_tail
    return True


def _bz2_at_least(f, needed: int) -> bool:
    produced, decoder = 0, bz2.BZ2Decompressor()
    while produced < needed:
        if decoder.eof:  # next stream
            data = decoder.unused_data or f.read(_CHUNK)
            decoder = bz2.BZ2Decompressor()
        elif decoder.needs_input:
            data = f.read(_CHUNK)
        else:
            data = b""  # more output waits inside the decoder
        if not data and (decoder.needs_input or decoder.eof):
            return False
        try:
            produced += len(decoder.decompress(data, _CHUNK))
        except (OSError, EOFError, ValueError):
            return False
    return True


def _decompressed_at_least(path: Path, kind: str, needed: int) -> bool:
    """Stream-decompress until ``needed`` bytes came out (True) or the data ended (False).

    Memory stays at one chunk; time is bounded by ``needed`` (itself within the budget).
    Multi-member files are followed member by member; a corrupt stream counts as ending
    where it breaks.
    """
    with open(path, "rb") as f:
        return _gzip_at_least(f, needed) if kind == "gzip" else _bz2_at_least(f, needed)


def _data_file(img, path: Path) -> Path:
    try:
        name = img.file_map["image"].filename
    except (KeyError, AttributeError):
        return path
    return Path(name) if name else path


def check_claimed_size(img, path: str | os.PathLike) -> None:
    """Refuse (ValueError naming ``path``) a header whose data would not fit memory or file.

    ``img`` is a nibabel image whose samples have NOT been read yet. The claim is
    ``prod(shape) * itemsize`` bytes after the header's data offset.
    """
    path = Path(path)
    shape = tuple(int(n) for n in img.header.get_data_shape())
    if any(n < 0 for n in shape):
        raise VolumeRefused(f"{path}: the header claims a negative dimension {shape}")
    itemsize = np.dtype(img.get_data_dtype()).itemsize
    n_voxels = math.prod(shape)
    claimed = n_voxels * itemsize
    working = n_voxels * max(itemsize, 4)
    budget = memory_budget_bytes()
    if working > budget:
        raise VolumeRefused(
            f"{path}: the header claims {shape} voxels ({_human(claimed)} of data), more than "
            f"the {_human(budget)} memory budget for one volume (corrupt header, or raise "
            "NAPARI_REG_MAX_VOLUME_GB)")
    proxy = getattr(img, "dataobj", None)
    offset = getattr(proxy, "offset", None)
    if offset is None or not isinstance(offset, int | np.integer):
        return  # MINC (HDF5/netCDF) sizes are checked by their own libraries
    needed = int(offset) + claimed
    data_file = _data_file(img, path)
    kind = _compression(data_file)
    if kind == "":
        have = data_file.stat().st_size
        if have < needed:
            raise VolumeRefused(
                f"{data_file}: the header claims {shape} voxels ({_human(claimed)} of data) "
                f"but the file holds only {_human(have)} (truncated file or corrupt header)")
        return
    if kind == "zstd":
        return
    if kind == "gzip" and needed < 2**32:
        trailer = _gzip_trailer_size(data_file)
        # deflate expands at most ~1032:1, so a larger trailer is garbage (truncated file)
        if needed <= trailer <= _MAX_DEFLATE_RATIO * data_file.stat().st_size:
            return  # the usual single-member file: the trailer says it is big enough
    if not _decompressed_at_least(data_file, kind, needed):
        raise VolumeRefused(
            f"{data_file}: the header claims {shape} voxels ({_human(claimed)} of data) but "
            f"the compressed file ({_human(data_file.stat().st_size)}) holds less "
            "(truncated file or corrupt header)")


def check_geometry(affine: np.ndarray, shape: tuple[int, ...], path: str | os.PathLike) -> None:
    """Refuse (ValueError naming ``path``) a voxel->world affine that is not plausible.

    Voxel sizes (column norms, mm) must lie in [MIN_VOXEL_MM, MAX_VOXEL_MM], every entry
    and the field of view below MAX_COORDINATE_MM, and the axes must not be nearly
    parallel (condition number below MAX_CONDITION).
    """
    affine = np.asarray(affine, dtype=np.float64)
    d = affine.shape[0] - 1
    if not np.all(np.isfinite(affine)):
        raise VolumeRefused(f"{path}: the voxel-to-world affine is not finite")
    linear = affine[:d, :d]
    sizes = np.linalg.norm(linear, axis=0)
    bad = [f"{s:.3g}" for s in sizes if not MIN_VOXEL_MM <= s <= MAX_VOXEL_MM]
    if bad:
        raise VolumeRefused(
            f"{path}: implausible voxel size(s) {', '.join(bad)} mm (allowed "
            f"{MIN_VOXEL_MM:g} to {MAX_VOXEL_MM:g} mm): corrupt pixdim/sform/qform")
    if np.abs(affine).max() > MAX_COORDINATE_MM:
        raise VolumeRefused(f"{path}: the voxel-to-world affine has coordinates beyond "
                       f"{MAX_COORDINATE_MM:g} mm: corrupt sform/qform offsets")
    extent = float(np.linalg.norm(sizes * np.asarray(shape[:d], dtype=np.float64)))
    if extent > MAX_COORDINATE_MM:
        raise VolumeRefused(f"{path}: the field of view ({extent:.3g} mm) is implausible")
    cond = np.linalg.cond(linear / sizes)
    if not np.isfinite(cond) or cond > MAX_CONDITION:
        raise VolumeRefused(f"{path}: the voxel axes are (nearly) parallel in the voxel-to-world "
                       "affine: a degenerate sform/qform")
