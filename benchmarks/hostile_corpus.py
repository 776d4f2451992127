"""A seeded corpus of hostile inputs: malformed volumes, transforms, landmarks and fields.

Used by ``tests/test_hostile.py`` (a small slice) and ``benchmarks/bench_hostile.py``
(all of it). Every file is derived from a small valid one by ONE corruption (a header
field set to an absurd value, a truncation, random bytes), so a failure points at one
cause. Deterministic for a given seed.

Header layouts: NIfTI-1 (348-byte header, little-endian), NIfTI-2 (540 bytes), MGH
(big-endian, data at byte 284), Analyze 7.5 (.hdr/.img pair).
"""

from __future__ import annotations

import gzip
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

__all__ = ["HostileFile", "good_pair", "landmark_corpus", "transform_corpus", "volume_corpus"]


@dataclass
class HostileFile:
    """One corrupt file: its path, what was done to it, and its kind."""

    path: Path
    what: str
    kind: str  # "volume", "transform", "landmarks", "field"


SHAPE = (20, 18, 16)

# (name, offset, struct format) of NIfTI-1 header fields worth corrupting.
NIFTI1_FIELDS = [
    ("sizeof_hdr", 0, "<i"), ("dim0", 40, "<h"), ("dim1", 42, "<h"), ("dim2", 44, "<h"),
    ("dim3", 46, "<h"), ("dim4", 48, "<h"), ("intent_code", 68, "<h"),
    ("datatype", 70, "<h"), ("bitpix", 72, "<h"), ("pixdim0", 76, "<f"),
    ("pixdim1", 80, "<f"), ("pixdim2", 84, "<f"), ("pixdim3", 88, "<f"),
    ("vox_offset", 108, "<f"), ("scl_slope", 112, "<f"), ("scl_inter", 116, "<f"),
    ("qform_code", 252, "<h"), ("sform_code", 254, "<h"), ("quatern_b", 256, "<f"),
    ("qoffset_x", 268, "<f"), ("srow_x0", 280, "<f"), ("srow_x3", 292, "<f"),
    ("srow_y1", 300, "<f"), ("srow_z2", 320, "<f"), ("srow_z3", 324, "<f"),
]
NIFTI2_FIELDS = [
    ("sizeof_hdr", 0, "<i"), ("datatype", 12, "<h"), ("bitpix", 14, "<h"),
    ("dim0", 16, "<q"), ("dim1", 24, "<q"), ("dim3", 40, "<q"), ("pixdim1", 112, "<d"),
    ("pixdim3", 128, "<d"), ("vox_offset", 168, "<q"), ("scl_slope", 176, "<d"),
    ("sform_code", 348, "<i"), ("srow_x0", 400, "<d"), ("srow_z3", 488, "<d"),
]
MGH_FIELDS = [
    ("version", 0, ">i"), ("width", 4, ">i"), ("height", 8, ">i"), ("depth", 12, ">i"),
    ("nframes", 16, ">i"), ("type", 20, ">i"), ("goodRASflag", 28, ">h"),
    ("spacing_x", 30, ">f"), ("spacing_z", 38, ">f"), ("mdc_0", 42, ">f"), ("c_r", 78, ">f"),
]
ANALYZE_FIELDS = [
    ("dim0", 40, "<h"), ("dim1", 42, "<h"), ("dim3", 46, "<h"), ("datatype", 70, "<h"),
    ("bitpix", 72, "<h"), ("pixdim1", 80, "<f"), ("vox_offset", 108, "<f"),
]
_INT_VALUES = {"h": [0, -1, 32767, -32768, 7], "i": [0, -1, 2**31 - 1, -(2**31), 9999],
               "q": [0, -1, 2**40, -(2**40), 2**62]}
_FLOAT_VALUES = [0.0, -1.0, 1e30, -1e30, float("nan"), float("inf"), 1e-30, 3.0e38]


def _values(fmt: str, rng: np.random.Generator, n: int) -> list:
    code = fmt[-1]
    pool = _FLOAT_VALUES if code in "fd" else _INT_VALUES[code]
    picks = rng.choice(len(pool), size=min(n, len(pool)), replace=False)
    return [pool[int(i)] for i in picks]


def _sample() -> np.ndarray:
    i, j, k = np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE], indexing="ij")
    blob = np.exp(-((i - 0.2) ** 2 + j**2 * 1.5 + (k + 0.1) ** 2) * 3)
    return (1000 * blob + 50 * (i > 0.3)).astype(np.int16)


def _affine() -> np.ndarray:
    return np.array([[-1.5, 0, 0, 14.0], [0, 1.25, 0, -11.0], [0, 0, 2.0, -15.0], [0, 0, 0, 1]])


def good_pair(folder: Path) -> tuple[Path, Path]:
    """A small valid fixed/moving NIfTI pair (the moving one shifted by 2 mm)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = _sample()
    fixed, moving = folder / "good_fixed.nii.gz", folder / "good_moving.nii.gz"
    nib.save(nib.Nifti1Image(data, _affine()), str(fixed))
    shifted = _affine()
    shifted[0, 3] += 2.0
    nib.save(nib.Nifti1Image(data, shifted), str(moving))
    return fixed, moving


def _corrupt(raw: bytes, offset: int, fmt: str, value) -> bytes:
    out = bytearray(raw)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def volume_corpus(folder: Path, seed: int = 0, per_field: int = 2) -> list[HostileFile]:
    """Malformed volumes: header fields one at a time, truncations, random bytes."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    data, affine = _sample(), _affine()
    files: list[HostileFile] = []

    def add(name: str, content: bytes, what: str, compress: bool = False) -> Path:
        path = folder / name
        path.write_bytes(gzip.compress(content, mtime=0) if compress else content)
        files.append(HostileFile(path, what, "volume"))
        return path

    base = folder / "_base"
    base.mkdir(exist_ok=True)
    sources = {}
    for label, img, ext in (("n1", nib.Nifti1Image(data, affine), ".nii"),
                            ("n2", nib.Nifti2Image(data, affine), ".nii"),
                            ("mgh", nib.MGHImage(data.astype(np.float32), affine), ".mgh")):
        path = base / f"{label}{ext}"
        nib.save(img, str(path))
        sources[label] = path.read_bytes()
    for label, fields, ext in (("n1", NIFTI1_FIELDS, ".nii"), ("n2", NIFTI2_FIELDS, ".nii"),
                               ("mgh", MGH_FIELDS, ".mgh")):
        for name, offset, fmt in fields:
            for k, value in enumerate(_values(fmt, rng, per_field)):
                gz = bool(rng.integers(2)) and label != "mgh"
                out_ext = ".mgz" if (label == "mgh" and k % 2) else ext + (".gz" if gz else "")
                content = _corrupt(sources[label], offset, fmt, value)
                add(f"{label}_{name}_{k}{out_ext}", content, f"{label} {name} = {value}",
                    compress=out_ext.endswith((".gz", ".mgz")))
    analyze = nib.AnalyzeImage(data, affine)
    nib.save(analyze, str(base / "an.hdr"))
    for name, offset, fmt in ANALYZE_FIELDS:
        for k, value in enumerate(_values(fmt, rng, per_field)):
            hdr = folder / f"an_{name}_{k}.hdr"
            hdr.write_bytes(_corrupt((base / "an.hdr").read_bytes(), offset, fmt, value))
            shutil.copy(base / "an.img", hdr.with_suffix(".img"))
            files.append(HostileFile(hdr, f"analyze {name} = {value}", "volume"))
    # Truncations: inside the header, just after it, mid-data; plain and gzip.
    n1 = sources["n1"]
    for cut in (10, 200, 348, 352, len(n1) // 2, len(n1) - 1):
        add(f"trunc_{cut}.nii", n1[:cut], f"NIfTI-1 truncated at {cut} bytes")
        add(f"trunc_{cut}.nii.gz", n1[:cut], f"NIfTI-1 truncated at {cut}, gzip", True)
    whole = gzip.compress(n1, mtime=0)
    for frac in (0.1, 0.5, 0.95):
        add(f"gztrunc_{frac}.nii.gz", whole[: int(len(whole) * frac)],
            f"gzip stream cut at {frac:.0%}")
    # A small file that claims gigabytes (the freeze of issue 14) and a lying gzip trailer.
    big = _corrupt(_corrupt(_corrupt(n1, 42, "<h", 1500), 44, "<h", 1500), 46, "<h", 450)
    add("claims_2gb.nii.gz", big, "header claims 1500x1500x450 int16", True)
    add("claims_2gb.nii", big, "header claims 1500x1500x450 int16 (plain)")
    mid = _corrupt(_corrupt(n1, 42, "<h", 600), 44, "<h", 600)
    liar = bytearray(gzip.compress(mid, mtime=0))
    liar[-4:] = (2**31).to_bytes(4, "little")
    add("lying_trailer.nii.gz", bytes(liar), "gzip ISIZE trailer lies (2 GB)")
    huge_voxel = _corrupt(_corrupt(_corrupt(n1, 254, "<h", 0), 252, "<h", 0), 80, "<f", 1e30)
    add("voxel_1e30.nii.gz", huge_voxel, "pixdim[1] = 1e30 mm, no sform/qform", True)
    huge_srow = _corrupt(n1, 280, "<f", 1e30)
    add("srow_1e30.nii.gz", huge_srow, "srow_x[0] = 1e30 (sform)", True)
    for k in range(6):
        ext = (".nii", ".nii.gz", ".mgz", ".mgh", ".hdr", ".nii")[k]
        size = int(rng.integers(1, 4000))
        add(f"random_{k}{ext}", rng.integers(0, 256, size, dtype=np.uint8).tobytes(),
            f"{size} random bytes")
    add("empty.nii.gz", b"", "empty file")
    return files


def transform_corpus(folder: Path, seed: int = 0) -> list[HostileFile]:
    """Malformed or absurd linear transform files (ITK text, MATLAB, FSL)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    head = "#Insight Transform File V1.0\n#Transform 0\nTransform: AffineTransform_double_3_3\n"
    eye = [1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0]

    def itk(params, fixed="0 0 0", kind="AffineTransform_double_3_3") -> str:
        return (head.replace("AffineTransform_double_3_3", kind) + "Parameters: "
                + " ".join(repr(float(p)) for p in params) + f"\nFixedParameters: {fixed}\n")

    cases = {
        "singular.tfm": itk([1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]),
        "rank1.tfm": itk([1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0]),
        "huge_param.tfm": itk([1e308, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0]),
        "scale_1e9.tfm": itk([1e9, 0, 0, 0, 1e9, 0, 0, 0, 1e9, 0, 0, 0]),
        "scale_1e-9.tfm": itk([1e-9, 0, 0, 0, 1e-9, 0, 0, 0, 1e-9, 0, 0, 0]),
        "translation_1e12.tfm": itk([*eye[:9], 1e12, 0, 0]),
        "nan.tfm": itk([*eye[:9], float("nan"), 0, 0]),
        "inf.tfm": itk([*eye[:9], float("inf"), 0, 0]),
        "short_params.tfm": itk(eye[:7]),
        "long_params.tfm": itk(eye + [1, 2]),
        "huge_center.tfm": itk([1.1, *eye[1:]], fixed="1e300 0 0"),
        "unknown_type.tfm": itk(eye, kind="FooTransform_double_3_3"),
        "bspline.tfm": itk(eye, kind="BSplineTransform_double_3_3"),
        "2d_in_3d.tfm": itk([1, 0, 0, 1, 0, 0], fixed="0 0",
                            kind="AffineTransform_double_2_2"),
        "no_params.tfm": head,
        "garbage_line.tfm": head + "Parameters: 1 0 0 0 1 0 0 0 1 0 0 0\nwhat is this\n",
        "bad_number.tfm": head + "Parameters: 1 0 0 0 one 0 0 0 1 0 0 0\n",
        "empty.tfm": "",
        "only_magic.tfm": "#Insight Transform File V1.0\n",
        "composite_empty.tfm": "#Insight Transform File V1.0\n#Transform 0\n"
                               "Transform: CompositeTransform_double_3_3\n",
        "fsl_singular.mat": "1 0 0 0\n0 1 0 0\n0 0 0 0\n0 0 0 1\n",
        "fsl_short.mat": "1 0 0\n0 1 0\n",
        "fsl_nan.mat": "1 0 0 nan\n0 1 0 0\n0 0 1 0\n0 0 0 1\n",
        "fsl_huge.mat": "1e300 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n",
    }
    files = []
    for name, text in cases.items():
        path = folder / name
        path.write_text(text)
        files.append(HostileFile(path, name.rsplit(".", 1)[0].replace("_", " "), "transform"))
    for k in range(4):
        path = folder / f"random_{k}.{('tfm', 'mat', 'txt', 'mat')[k]}"
        path.write_bytes(rng.integers(0, 256, int(rng.integers(1, 2000)),
                                      dtype=np.uint8).tobytes())
        files.append(HostileFile(path, "random bytes", "transform"))
    return files


def landmark_corpus(folder: Path, seed: int = 0) -> list[tuple[HostileFile, Path]]:
    """(hostile fixed-landmark file, a valid moving-landmark file) pairs."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    good = "id,x,y,z\n" + "".join(
        f"p{k},{x:.2f},{y:.2f},{z:.2f}\n" for k, (x, y, z) in
        enumerate(rng.uniform(-8, 8, size=(6, 3))))
    moving = folder / "moving_good.csv"
    moving.write_text(good)
    lines = good.splitlines()
    cases = {
        "far_away.csv": "\n".join(lines[:2] + ["p1,1e7,0,0"] + lines[3:]) + "\n",
        "all_far.csv": "id,x,y,z\n" + "".join(f"p{k},1e9,1e9,1e9\n" for k in range(6)),
        "nan.csv": good.replace(lines[1].split(",")[1], "nan", 1),
        "inf.csv": good.replace(lines[2].split(",")[2], "inf", 1),
        "two_columns.csv": "id,x\np0,1\np1,2\n",
        "no_rows.csv": "id,x,y,z\n",
        "duplicate_ids.csv": good + lines[1] + "\n",
        "text.csv": "id,x,y,z\np0,a,b,c\n",
        "empty.csv": "",
        "no_match.csv": good.replace("p", "q"),
        "one_pair.csv": "\n".join(lines[:2]) + "\n",
        "collinear.csv": "id,x,y,z\n" + "".join(f"p{k},{k},{k},{k}\n" for k in range(6)),
        "huge_count.csv": "id,x,y,z\n" + "".join(f"p{k},0,0,0\n" for k in range(6)),
        "bad.fcsv": "# Markups fiducial file version = 4.11\n# CoordinateSystem = XYZ\nnope\n",
        "bad.mrk.json": "{\"markups\": [{\"controlPoints\": 3}]}",
        "binary.csv": None,
    }
    out = []
    for name, text in cases.items():
        path = folder / name
        if text is None:
            path.write_bytes(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
        else:
            path.write_text(text)
        out.append((HostileFile(path, name, "landmarks"), moving))
    return out


def field_corpus(folder: Path, seed: int = 0) -> list[HostileFile]:
    """Malformed displacement fields: truncated, NaN, wrong shape, lying header."""
    folder.mkdir(parents=True, exist_ok=True)
    vectors = np.zeros((*SHAPE, 1, 3), np.float32)
    img = nib.Nifti1Image(vectors, _affine())
    img.header.set_intent(1007)
    good = folder / "_field.nii"
    nib.save(img, str(good))
    raw = good.read_bytes()
    files = []
    for name, content in (("field_trunc.nii.gz", gzip.compress(raw[: len(raw) // 2])),
                          ("field_trunc.nii", raw[: len(raw) // 3]),
                          ("field_gzcut.nii.gz", gzip.compress(raw)[:len(gzip.compress(raw)) // 2]),
                          ("field_claims_big.nii.gz", gzip.compress(
                              _corrupt(_corrupt(raw, 42, "<h", 3000), 44, "<h", 3000)))):
        (folder / name).write_bytes(content)
        files.append(HostileFile(folder / name, name, "field"))
    nan = vectors.copy()
    nan[3, 3, 3, 0, 0] = np.nan
    nan_img = nib.Nifti1Image(nan, _affine())
    nan_img.header.set_intent(1007)
    nib.save(nan_img, str(folder / "field_nan.nii.gz"))
    files.append(HostileFile(folder / "field_nan.nii.gz", "NaN vector", "field"))
    huge = np.full_like(vectors, 1e30)
    huge_img = nib.Nifti1Image(huge, _affine())
    huge_img.header.set_intent(1007)
    nib.save(huge_img, str(folder / "field_1e30.nii.gz"))
    files.append(HostileFile(folder / "field_1e30.nii.gz", "1e30 mm vectors", "field"))
    return files


def record_corpus(folder: Path, fixed: Path, moving: Path) -> list[HostileFile]:
    """Malformed or hand-edited run records (``register --replay``)."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    base = {"fixed": str(fixed), "moving": str(moving)}
    cases = {
        "not_json.json": "not json",
        "list.json": "[1, 2]",
        "no_moving.json": json.dumps({"fixed": str(fixed)}),
        "params_list.json": json.dumps({**base, "parameters": [1]}),
        "levels_text.json": json.dumps({**base, "parameters": {"levels": "abc"}}),
        "levels_float.json": json.dumps({**base, "parameters": {"levels": 1e9}}),
        "unknown_key.json": json.dumps({**base, "parameters": {"bogus": 1}}),
        "bad_transform.json": json.dumps({**base, "parameters": {"transform": "nope"}}),
        "negative_iterations.json": json.dumps({**base, "parameters": {"iterations": [-5]}}),
        "missing_inputs.json": json.dumps({"fixed": "/nonexistent/a.nii.gz",
                                           "moving": "/nonexistent/b.nii.gz"}),
    }
    files = []
    for name, text in cases.items():
        (folder / name).write_text(text)
        files.append(HostileFile(folder / name, name, "record"))
    return files
