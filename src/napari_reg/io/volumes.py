"""Volumes on disk (nibabel) <-> :class:`napari_reg.core.image.Volume`.

Geometry: a loaded volume carries the file's voxel->world matrix as nibabel computes it
(``img.affine``: for NIfTI the sform when its code is set, else the qform, else the
pixdim fallback), which is world RAS+ in millimetres. Voxel index ``(i, j, k)`` of
``data`` is the file's own index order; nothing is reoriented or resampled, so flipped,
anisotropic and oblique grids come back exactly as stored.

Intensities: ``scl_slope``/``scl_inter`` are applied by nibabel. An unscaled integer file
keeps its integer type (label maps stay labels, uint8 images stay small); scaled or
floating data come back as float32 (float64 only when the file stores float64).

Formats read: everything ``nibabel.load`` reads as a spatial image, in particular NIfTI-1/2
(``.nii``, ``.nii.gz``, ``.hdr/.img`` pairs), MGH (``.mgz``, ``.mgh``), Analyze and MINC.
Formats written: NIfTI-1 (``.nii`` or ``.nii.gz``), always atomically.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from napari_reg.core.image import Volume, VolumeError
from napari_reg.io.atomic import atomic_path
from napari_reg.io.volume_checks import VolumeRefused, check_claimed_size, check_geometry

from ..core.errors import NapariRegError

__all__ = [
    "VOLUME_EXTENSIONS",
    "VolumeReadError",
    "VolumeWriteError",
    "has_volume_extension",
    "load_volume",
    "load_volume_stack",
    "read_image_array",
    "save_volume",
    "save_volume_stack",
    "volume_name",
]

# Lower-case suffixes owned by this module (".nii.gz" must be tested before ".gz").
VOLUME_EXTENSIONS: tuple[str, ...] = (
    ".nii.gz", ".nii", ".mgz", ".mgh", ".hdr", ".img", ".hdr.gz", ".img.gz", ".mnc",
)
_WRITE_EXTENSIONS = (".nii.gz", ".nii")


class VolumeReadError(NapariRegError):
    """A volume file could not be read; the message names the file and the problem."""


class VolumeWriteError(NapariRegError):
    """A volume could not be written; the message names the file and the problem."""


def has_volume_extension(path: str | os.PathLike) -> bool:
    """True when ``path`` ends with one of :data:`VOLUME_EXTENSIONS` (case-insensitive)."""
    name = os.fspath(path).lower()
    return name.endswith(VOLUME_EXTENSIONS)


def volume_name(path: str | os.PathLike) -> str:
    """The file name without its (possibly double) volume extension: ``t1.nii.gz -> t1``."""
    name = Path(path).name
    for ext in VOLUME_EXTENSIONS:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return Path(path).stem


def _load_image(path: Path):
    """nibabel image for ``path`` with every failure turned into a VolumeReadError."""
    try:
        return _open_image(path)
    except OSError as exc:  # symlink loops, permissions, I/O errors: one line, file named
        raise VolumeReadError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except RecursionError:
        raise VolumeReadError(f"{path}: cannot read (symbolic link loop)") from None


def _open_image(path: Path):
    if not path.exists():
        if path.is_symlink():
            raise VolumeReadError(f"{path}: a broken or looping symbolic link")
        raise VolumeReadError(f"{path}: no such file")
    if path.is_dir():
        raise VolumeReadError(f"{path}: is a directory, not a volume file")
    if path.stat().st_size == 0:
        raise VolumeReadError(f"{path}: the file is empty (0 bytes)")
    try:
        img = nib.load(os.fspath(path))
    except Exception as exc:  # nibabel raises many types; all mean "not readable"
        raise VolumeReadError(f"{path}: not a readable volume file ({exc})") from exc
    if not isinstance(img, nib.spatialimages.SpatialImage):
        raise VolumeReadError(f"{path}: {type(img).__name__} is not a volume image")
    try:  # before any sample is read: a lying header must not allocate gigabytes
        check_claimed_size(img, path)
    except VolumeRefused as exc:
        raise VolumeReadError(str(exc)) from None
    except (OSError, ValueError, TypeError, OverflowError) as exc:
        raise VolumeReadError(f"{path}: not a readable volume file ({exc})") from None
    return img


def read_image_array(img, path: str | os.PathLike = "") -> np.ndarray:
    """The samples of a nibabel image with scaling applied and a sensible dtype.

    Unscaled integers keep their dtype; anything scaled or floating becomes float32,
    except float64 files, which stay float64. Truncated or corrupt payloads raise
    :class:`VolumeReadError`.
    """
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # zlib/EOF errors of truncated .nii.gz, short files
        raise VolumeReadError(
            f"{path}: the image data cannot be read (truncated or corrupt file: {exc})"
        ) from exc
    data = np.asarray(data)
    if np.iscomplexobj(data) or data.dtype.fields is not None:
        raise VolumeReadError(
            f"{path}: data type {img.get_data_dtype()} (complex or RGB) is not supported; "
            "a scalar volume is needed"
        )
    if data.dtype.kind == "f" and data.dtype != np.float32:
        stored = np.dtype(img.get_data_dtype())
        if not (stored.kind == "f" and stored.itemsize >= 8):
            data = data.astype(np.float32)
    elif data.dtype.kind == "b":
        data = data.astype(np.uint8)
    if not data.dtype.isnative:  # big-endian files: native order for numpy/scipy/OpenGL
        data = data.astype(data.dtype.newbyteorder("="))
    return _spatial_axes_first(img, data)


def _spatial_axes_first(img, data: np.ndarray) -> np.ndarray:
    """Move non-spatial axes (time, vector components) behind the three spatial ones.

    NIfTI and MGH already store them last. MINC names its axes and may put ``time`` first;
    its spatial axes are those whose names end in ``space`` (nibabel's own rule for the
    affine), so the remaining ones are moved to the end, keeping their order.
    """
    if data.ndim <= 3:
        return data
    try:
        names = [n.decode() if isinstance(n, bytes) else str(n)
                 for n in img.dataobj.minc_file._dim_names]
    except AttributeError:  # not MINC: the file order is already (X, Y, Z, extra...)
        return data
    if len(names) != data.ndim:
        return data
    spatial = [i for i, n in enumerate(names) if n.endswith("space")]
    extra = [i for i, n in enumerate(names) if not n.endswith("space")]
    return np.transpose(data, spatial + extra)


def _checked_affine(img, path: Path) -> np.ndarray:
    try:
        affine = np.asarray(img.affine, dtype=np.float64)
    except Exception as exc:  # noqa: BLE001 - nibabel computes it from untrusted fields
        raise VolumeReadError(f"{path}: the voxel-to-world affine cannot be computed "
                              f"({exc})") from None
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise VolumeReadError(f"{path}: the voxel-to-world affine is missing or not finite")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise VolumeReadError(
            f"{path}: the voxel-to-world affine is not invertible (zero voxel size or "
            "degenerate sform/qform)"
        )
    try:
        check_geometry(affine, tuple(img.shape[:3]) + (1,) * (3 - len(img.shape[:3])), path)
    except VolumeRefused as exc:
        raise VolumeReadError(str(exc)) from None
    return affine


def _metadata(img, path: Path, affine: np.ndarray) -> dict:
    return {
        "source_path": os.fspath(path),
        "original_affine": affine.copy(),
        "header": img.header.copy(),
        "format": type(img).__name__,
        "stored_dtype": str(np.dtype(img.get_data_dtype())),
    }


def _squeeze_extra_axes(data: np.ndarray) -> np.ndarray:
    """Drop singleton axes beyond the third (NIfTI pads e.g. (X, Y, Z, 1) or (X, Y, Z, 1, 3))."""
    while data.ndim > 3 and 1 in data.shape[3:]:
        axis = 3 + data.shape[3:].index(1)
        data = np.squeeze(data, axis=axis)
    return data


def load_volume(path: str | os.PathLike) -> Volume:
    """Read a 2D or 3D volume with its voxel->world (RAS mm) affine.

    A file with more than three axes is accepted only when the extra axes are singleton
    (they are squeezed); otherwise :class:`VolumeReadError` names the shape and points to
    :func:`load_volume_stack`. A 2D file (shape ``(X, Y)`` or ``(X, Y, 1)``) stays 3D with a
    single slice so its affine keeps its world z; use ``Volume`` directly for true 2D.

    ``volume.metadata`` holds ``source_path``, ``original_affine`` (4x4), ``header`` (a
    copy of the file's header), ``format`` and ``stored_dtype``.
    """
    path = Path(path)
    img, data, affine = _read_checked(
        path, 3, "registration needs one 3D volume. Extract a single volume first (e.g. the "
        "first time point).")
    try:
        return Volume(data, affine, volume_name(path), _metadata(img, path, affine))
    except VolumeError as exc:
        raise VolumeReadError(f"{path}: {exc}") from exc


def load_volume_stack(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, dict]:
    """Read a 3D or 4D file as ``(data, affine, metadata)``; a 4D file is a stack of volumes.

    ``data`` has shape ``(X, Y, Z)`` or ``(X, Y, Z, N)`` (file order; singleton extra axes
    squeezed), ``affine`` is the 4x4 voxel->world (RAS mm) matrix of the spatial axes.
    More than one non-singleton extra axis raises :class:`VolumeReadError`.
    """
    path = Path(path)
    img, data, affine = _read_checked(
        path, 4, "only 3D volumes and 4D stacks of volumes can be opened")
    return data, affine, _metadata(img, path, affine)


def _read_checked(path: Path, max_ndim: int, too_many: str
                  ) -> tuple[nib.spatialimages.SpatialImage, np.ndarray, np.ndarray]:
    """``(image, data with at least 3 axes, 4x4 affine)`` of a file, refusing more than
    ``max_ndim`` non-singleton axes (``too_many`` says what to do) and empty arrays."""
    img = _load_image(path)
    affine = _checked_affine(img, path)
    data = _squeeze_extra_axes(read_image_array(img, path))
    if data.ndim > max_ndim:
        raise VolumeReadError(
            f"{path}: has {data.ndim} dimensions (shape {tuple(data.shape)}); {too_many}")
    if data.ndim < 3:
        data = data.reshape(data.shape + (1,) * (3 - data.ndim))
    if data.size == 0:
        raise VolumeReadError(f"{path}: the volume is empty (shape {tuple(data.shape)})")
    return img, data, affine


def _output_dtype(data: np.ndarray, dtype) -> np.dtype:
    if dtype is not None:
        return np.dtype(dtype)
    dt = data.dtype
    if dt.kind == "b":
        return np.dtype(np.uint8)
    if dt.kind in "iu" and dt.itemsize == 8:
        # nibabel refuses 64-bit integers without an explicit type; label maps from napari
        # are often int64 but fit 32 bits.
        info = np.iinfo(np.int32)
        if data.size == 0 or (data.min() >= info.min and data.max() <= info.max):
            return np.dtype(np.int32)
    if dt.kind == "f" and dt.itemsize == 2:
        return np.dtype(np.float32)
    return dt


def _cast(data: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``data`` as ``dtype``; floats going to integers are rounded and clipped to range."""
    if data.dtype == dtype:
        return data
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if data.dtype.kind == "f":
            data = np.rint(np.nan_to_num(data))
        return np.clip(data, info.min, info.max).astype(dtype)
    return data.astype(dtype)


def _xform_code(header, name: str) -> int:
    try:
        code = int(header[name])
    except Exception:
        code = 0
    # Keep the source's meaning (scanner, aligned, Talairach, MNI) when it had one;
    # otherwise say "aligned to another file" (2), the honest code for a derived image.
    return code if code > 0 else 2


def save_volume(
    volume: Volume,
    path: str | os.PathLike,
    dtype: np.dtype | str | type | None = None,
    header=None,
) -> Path:
    """Write ``volume`` as NIfTI-1 (``.nii`` or ``.nii.gz``) through an atomic rename.

    The volume's voxel->world (RAS mm) affine goes into both sform and qform (qform is
    the nearest rigid+zoom version when the affine has shear). Codes: those of ``header``
    (or of ``volume.metadata['header']``) when set, else 2 (aligned). ``dtype`` defaults to
    the data's own type (bool -> uint8, int64 -> int32 when the values fit). ``header``:
    a nibabel header whose descriptive fields (units, intent, description) are kept;
    shape, type and geometry always come from ``volume``. Returns the written path.
    """
    data = np.asarray(volume.data)
    affine = np.asarray(volume.affine, dtype=np.float64)
    if data.ndim == 2:  # a 2D image is stored as one slice of a 3D NIfTI
        affine3 = np.eye(4)
        affine3[:2, :2] = affine[:2, :2]
        affine3[:2, 3] = affine[:2, 2]
        affine, data = affine3, data[:, :, None]
    if header is None:
        header = volume.metadata.get("header") if isinstance(volume.metadata, dict) else None
    if data.ndim == 3 and data.shape[2] == 1 and _header_ndim(header) == 2:
        data = data[:, :, 0]  # a result on a 2D file's grid is written as a 2D file
    return _write_nifti(data, affine, path, dtype, header)


def _header_ndim(header) -> int:
    try:
        return len(header.get_data_shape())
    except AttributeError:
        return 0


def save_volume_stack(
    data: np.ndarray,
    affine: np.ndarray,
    path: str | os.PathLike,
    dtype: np.dtype | str | type | None = None,
    header=None,
) -> Path:
    """Write a stack ``(X, Y, Z, N)`` (or one volume ``(X, Y, Z)``) as NIfTI-1, atomically.

    ``affine`` is the 4x4 voxel->world (RAS mm) matrix of the spatial axes; the rest is
    as in :func:`save_volume`. The inverse of :func:`load_volume_stack`.
    """
    data = np.asarray(data)
    affine = np.asarray(affine, dtype=np.float64)
    if data.ndim not in (3, 4) or affine.shape != (4, 4):
        raise VolumeWriteError(
            f"{path}: expected a 3D volume or a 4D stack with a 4x4 affine, got data shape "
            f"{data.shape} and affine shape {affine.shape}"
        )
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise VolumeWriteError(f"{path}: the voxel-to-world affine is not invertible")
    return _write_nifti(data, affine, path, dtype, header)


def _write_nifti(data: np.ndarray, affine: np.ndarray, path, dtype, header) -> Path:
    path = Path(path)
    if not os.fspath(path).lower().endswith(_WRITE_EXTENSIONS):
        raise VolumeWriteError(
            f"{path}: volumes are written as NIfTI; use a .nii or .nii.gz file name"
        )
    out_dtype = _output_dtype(data, dtype)
    new_header = nib.Nifti1Header()
    if header is not None:
        try:
            new_header = nib.Nifti1Header.from_header(header)
        except Exception:  # a foreign header (MINC, MGH) with nothing to convert
            new_header = nib.Nifti1Header()
    sform_code = _xform_code(new_header, "sform_code")
    qform_code = _xform_code(new_header, "qform_code")
    data = _cast(data, out_dtype)
    img = nib.Nifti1Image(data, affine, new_header)
    img.set_data_dtype(out_dtype)
    # Samples are stored as they are (cast above), so no scl_slope/scl_inter: the input's
    # scaling, if the header carried one, does not describe these samples.
    img.header.set_slope_inter(np.nan, np.nan)
    img.set_sform(affine, code=sform_code)
    img.set_qform(affine, code=qform_code)
    try:
        with atomic_path(path) as tmp:
            nib.save(img, os.fspath(tmp))
    except OSError as exc:
        raise VolumeWriteError(f"{path}: cannot write the volume ({exc})") from exc
    return path
