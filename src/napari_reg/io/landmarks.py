"""Landmark files: plain CSV and 3D Slicer markups (``.fcsv``, ``.mrk.json``).

In memory, landmarks are world RAS coordinates in millimetres with a string id each.
Fixed and moving landmarks are paired by id, never by row or click order, so a missing,
extra or reordered point cannot silently corrupt a fit.

* CSV (``.csv``): header ``id,x,y,z`` (2D: ``id,x,y``), world RAS mm. Coordinate columns
  may carry the unit (``x_mm``, ``x (mm)``); any other unit is an error. Lines starting
  with ``#`` are comments; ``# units = mm`` is accepted, another unit is an error.
* Slicer markups store LPS (the default since Slicer 4.11) or RAS, said in the file;
  points are converted to RAS on reading. The control point *label* becomes our id.
  ``.fcsv`` files are read as Slicer reads them: rows end at ``\n`` only (a ``\r`` stays
  in its field), a versioned file without a ``CoordinateSystem`` line is LPS, an
  unversioned one is Slicer 3's ``label,x,y,z,sel,vis`` in RAS.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from napari_reg.core.errors import NapariRegError
from napari_reg.io._slicer_csv import slicer_fields
from napari_reg.io.atomic import atomic_path

__all__ = ["LandmarkError", "LandmarkFileError", "LandmarkPairs", "Landmarks",
           "read_landmarks", "write_landmarks"]

_AXES = ("x", "y", "z")
_FCSV_COLUMNS = ["id", "x", "y", "z", "ow", "ox", "oy", "oz", "vis", "sel", "lock", "label",
                 "desc", "associatedNodeID"]
_SLICER_SCHEMA = ("https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/"
                  "Markups/Resources/Schema/markups-schema-v1.0.3.json#")
# A coordinate column: "x", or with its unit "x_mm", "x mm", "x (mm)", "x [mm]".
_COLUMN_RES = (re.compile(r"^([a-z])$"), re.compile(r"^([a-z])\s*[_ ]\s*(\w+)$"),
               re.compile(r"^([a-z])\s*[(\[]\s*(\w+)\s*[)\]]$"))


class LandmarkError(NapariRegError):
    """Invalid landmarks (duplicate ids, bad coordinates, mismatched dimensions)."""


class LandmarkFileError(LandmarkError):
    """A landmark file that cannot be read or written (the message names file and problem)."""


class LandmarkPairs(NamedTuple):
    """Landmarks matched by id: ``fixed[i]`` and ``moving[i]`` both belong to ``ids[i]``."""

    ids: list[str]
    fixed: np.ndarray  # (N, d) world RAS mm
    moving: np.ndarray  # (N, d) world RAS mm
    unpaired: list[str]  # ids present on one side only (fixed side first)


@dataclass
class Landmarks:
    """Named points in world RAS millimetres.

    ``ids`` are unique non-empty strings; ``points`` is ``(N, d)`` float64, d = 2 or 3.
    """

    ids: list[str]
    points: np.ndarray
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ids = [str(i) for i in self.ids]
        pts = np.array(self.points, dtype=np.float64)
        if pts.ndim == 1 and pts.size == 0:
            pts = pts.reshape(0, 3)
        if pts.ndim != 2 or pts.shape[1] not in (2, 3):
            raise LandmarkError(f"landmark points must have shape (N, 2) or (N, 3), got "
                                f"{pts.shape}")
        if len(self.ids) != len(pts):
            raise LandmarkError(f"{len(self.ids)} ids for {len(pts)} landmark points")
        if not np.all(np.isfinite(pts)):
            bad = [self.ids[i] for i in np.flatnonzero(~np.isfinite(pts).all(axis=1))]
            raise LandmarkError(f"landmarks {bad} have NaN or infinite coordinates")
        if any(not i.strip() for i in self.ids):
            raise LandmarkError("landmark ids must not be empty")
        seen: set[str] = set()
        dupes = sorted({i for i in self.ids if i in seen or seen.add(i)})
        if dupes:
            raise LandmarkError(f"duplicate landmark ids {dupes}: ids must be unique")
        self.points = pts

    @property
    def ndim(self) -> int:
        return int(self.points.shape[1])

    def __len__(self) -> int:
        return len(self.ids)

    def pair_with(self, other: Landmarks) -> LandmarkPairs:
        """Match ``self`` (fixed) with ``other`` (moving) by id.

        Common ids keep ``self``'s order; ids found on one side only are reported in
        ``unpaired`` (those of ``self`` first, then ``other``'s), never guessed.
        """
        if self.ndim != other.ndim:
            raise LandmarkError(f"cannot pair {self.ndim}D landmarks with {other.ndim}D ones")
        index = {i: k for k, i in enumerate(other.ids)}
        common = [i for i in self.ids if i in index]
        mine = {i: k for k, i in enumerate(self.ids)}
        unpaired = [i for i in self.ids if i not in index]
        unpaired += [i for i in other.ids if i not in mine]
        return LandmarkPairs(
            ids=common,
            fixed=self.points[[mine[i] for i in common]].reshape(-1, self.ndim),
            moving=other.points[[index[i] for i in common]].reshape(-1, self.ndim),
            unpaired=unpaired,
        )


def _lps_ras(points: np.ndarray) -> np.ndarray:
    """LPS <-> RAS (negate x and y; its own inverse)."""
    out = np.array(points, dtype=np.float64)
    out[:, :2] *= -1.0
    return out


def _number(text: str, where: str, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise LandmarkFileError(f"{where}: {column} is not a number: {text!r}") from None
    if not np.isfinite(value):
        raise LandmarkFileError(f"{where}: {column} is {text!r}; coordinates must be finite")
    return value


def _check_unit(unit: str, where: str) -> None:
    if unit.strip().lower() not in ("mm", "millimeter", "millimeters", "millimetre",
                                    "millimetres"):
        raise LandmarkFileError(f"{where}: coordinates are in {unit.strip()!r}; landmark "
                                "files must be in millimetres (mm)")


def _build(ids: list[str], rows: list[list[float]], d: int, path: Path,
           metadata: dict | None = None) -> Landmarks:
    try:
        return Landmarks(ids, np.array(rows, dtype=np.float64).reshape(-1, d),
                         metadata or {})
    except LandmarkFileError:
        raise
    except LandmarkError as exc:
        raise LandmarkFileError(f"{path}: {exc}") from None


def _read_text(path: Path) -> str:
    try:
        # bytes decoded as they are: no newline translation, so that '\r' reaches the
        # .fcsv reader as Slicer sees it
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise LandmarkFileError(f"landmark file not found: {path}") from None
    except UnicodeDecodeError:
        raise LandmarkFileError(f"{path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise LandmarkFileError(f"{path}: cannot read ({exc.strerror})") from None
    if not text.strip():
        raise LandmarkFileError(f"{path}: file is empty")
    return text


# ----------------------------------------------------------------- plain CSV
def _read_csv(path: Path) -> Landmarks:
    lines = _read_text(path).splitlines()
    body: list[tuple[int, str]] = []
    for n, line in enumerate(lines, 1):
        if line.lstrip().startswith("#"):
            m = re.match(r"#\s*units?\s*[=:]\s*(\S+)", line.strip(), re.IGNORECASE)
            if m:
                _check_unit(m.group(1), f"{path}, line {n}")
        elif line.strip():
            body.append((n, line))
    if not body:
        raise LandmarkFileError(f"{path}: no header line (expected 'id,x,y,z')")
    reader = csv.reader([ln for _, ln in body], skipinitialspace=True)
    header = [h.strip() for h in next(reader)]
    where = f"{path}, line {body[0][0]}"
    if len(header) not in (3, 4) or header[0].lower() != "id":
        raise LandmarkFileError(f"{where}: header must be 'id,x,y,z' (3D) or 'id,x,y' (2D), "
                                f"got {','.join(header)!r}")
    d = len(header) - 1
    for col, axis in zip(header[1:], _AXES, strict=False):
        m = next((m for r in _COLUMN_RES if (m := r.match(col.lower()))), None)
        if m is None or m.group(1) != axis:
            raise LandmarkFileError(f"{where}: column {col!r} should be {axis!r}; header "
                                    f"must be {','.join(('id',) + _AXES[:d])!r}")
        if m.lastindex == 2:
            _check_unit(m.group(2), f"{where}, column {col!r}")
    ids: list[str] = []
    rows: list[list[float]] = []
    for (n, _), fields in zip(body[1:], reader, strict=True):
        where = f"{path}, line {n}"
        if len(fields) != d + 1:
            raise LandmarkFileError(f"{where}: expected {d + 1} values (id and {d} "
                                    f"coordinates), found {len(fields)}")
        ids.append(fields[0].strip())
        rows.append([_number(v, where, a) for v, a in zip(fields[1:], _AXES, strict=False)])
    return _build(ids, rows, d, path)


def _write_csv(lm: Landmarks, tmp: Path) -> None:
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(("id",) + _AXES[:lm.ndim])
        for i, p in zip(lm.ids, lm.points, strict=True):
            w.writerow([i] + [repr(float(v)) for v in p])


# ----------------------------------------------------------------- Slicer .fcsv
def _coordinate_system(value: str, where: str) -> str:
    v = value.strip().upper()
    if v in ("LPS", "1"):
        return "LPS"
    if v in ("RAS", "0"):
        return "RAS"
    raise LandmarkFileError(f"{where}: unknown coordinate system {value.strip()!r} "
                            "(expected LPS or RAS)")


def _read_fcsv(path: Path) -> Landmarks:
    # Slicer reads rows with getline: they end at '\n' only, and a '\r' (Windows line
    # ends, or a stray one inside a label) stays in its field.
    lines = _read_text(path).split("\n")
    # Slicer's default is LPS (since 4.11) when a versioned file has no CoordinateSystem
    # line; an unversioned file is Slicer 3's "label,x,y,z,sel,vis" in RAS.
    versioned, system, columns = False, None, None
    data: list[tuple[int, str]] = []
    for n, line in enumerate(lines, 1):
        s = line.strip()
        if s.startswith("#"):
            key, _, value = s[1:].partition("=")
            key = key.strip().lower()
            if key == "markups fiducial file version":
                versioned = True
            elif key == "coordinatesystem":
                system = _coordinate_system(value, f"{path}, line {n}")
            elif key == "columns":
                columns = [c.strip() for c in value.split(",")]
            elif key in ("units", "coordinateunits"):
                _check_unit(value, f"{path}, line {n}")
        elif s:
            data.append((n, line))
    if columns is None:
        slicer3 = not versioned and system is None
        columns = ["label", "x", "y", "z", "sel", "vis"] if slicer3 else list(_FCSV_COLUMNS)
    if system is None:
        system = "LPS" if versioned else "RAS"
    missing = [c for c in ("x", "y", "z") if c not in columns]
    if missing or ("label" not in columns and "id" not in columns):
        raise LandmarkFileError(f"{path}: markups columns {columns} lack "
                                f"{missing or ['label']}")
    needed = max(columns.index(a) for a in _AXES) + 1
    ids, rows = [], []
    for n, line in data:
        fields = slicer_fields(line)
        where = f"{path}, line {n}"
        if len(fields) < needed:
            raise LandmarkFileError(f"{where}: {len(fields)} fields for {len(columns)} "
                                    "columns")
        row = dict(zip(columns, fields, strict=False))
        ids.append((row.get("label") or "").strip() or (row.get("id") or "").strip())
        rows.append([_number(row[a], where, a) for a in _AXES])
    pts = np.array(rows, dtype=np.float64).reshape(-1, 3)
    lm = _build(ids, _lps_ras(pts) if system == "LPS" else pts, 3, path,
                {"coordinate_system": system})
    return lm


def _write_fcsv(lm: Landmarks, tmp: Path, system: str) -> None:
    pts = _lps_ras(lm.points) if system == "LPS" else lm.points
    buf = io.StringIO()
    buf.write("# Markups fiducial file version = 4.11\n")
    buf.write(f"# CoordinateSystem = {system}\n")
    buf.write(f"# columns = {','.join(_FCSV_COLUMNS)}\n")
    w = csv.writer(buf, lineterminator="\n")
    for k, (label, p) in enumerate(zip(lm.ids, pts, strict=True), 1):
        w.writerow([str(k), *(repr(float(v)) for v in p), 0, 0, 0, 1, 1, 1, 0, label, "", ""])
    tmp.write_text(buf.getvalue(), encoding="utf-8")


# ----------------------------------------------------------------- Slicer .mrk.json
def _read_mrk_json(path: Path) -> Landmarks:
    try:
        doc = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise LandmarkFileError(f"{path}: not valid JSON ({exc})") from None
    markups = doc.get("markups") if isinstance(doc, dict) else None
    if not isinstance(markups, list) or not markups:
        raise LandmarkFileError(f"{path}: no 'markups' list (not a Slicer markups file?)")
    if len(markups) > 1:
        raise LandmarkFileError(f"{path}: holds {len(markups)} markups nodes; save one "
                                "landmark list per file")
    node = markups[0]
    system = _coordinate_system(str(node.get("coordinateSystem", "LPS")), str(path))
    _check_unit(str(node.get("coordinateUnits", "mm")), str(path))
    points = node.get("controlPoints", [])
    if not isinstance(points, list):
        raise LandmarkFileError(f"{path}: 'controlPoints' is not a list")
    ids, rows = [], []
    for k, cp in enumerate(points):
        where = f"{path}, control point {k}"
        if not isinstance(cp, dict):
            raise LandmarkFileError(f"{where}: not an object")
        if cp.get("positionStatus", "defined") != "defined":
            continue  # placeholders Slicer keeps for points not placed yet
        pos = cp.get("position")
        if not isinstance(pos, list) or len(pos) != 3:
            raise LandmarkFileError(f"{where}: 'position' must be a list of 3 numbers")
        ids.append(str(cp.get("label") or cp.get("id") or "").strip())
        rows.append([_number(str(v), where, a) for v, a in zip(pos, _AXES, strict=True)])
    pts = np.array(rows, dtype=np.float64).reshape(-1, 3)
    return _build(ids, _lps_ras(pts) if system == "LPS" else pts, 3, path,
                  {"coordinate_system": system})


def _write_mrk_json(lm: Landmarks, tmp: Path, system: str) -> None:
    pts = _lps_ras(lm.points) if system == "LPS" else lm.points
    # The identity orientation in RAS, written in the file's system.
    orient = [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0] if system == "LPS" else \
        [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    doc = {"@schema": _SLICER_SCHEMA, "markups": [{
        "type": "Fiducial", "coordinateSystem": system, "coordinateUnits": "mm",
        "locked": False, "labelFormat": "%N-%d",
        "controlPoints": [
            {"id": str(k), "label": label, "description": "", "associatedNodeID": "",
             "position": [float(v) for v in p], "orientation": orient, "selected": True,
             "locked": False, "visibility": True, "positionStatus": "defined"}
            for k, (label, p) in enumerate(zip(lm.ids, pts, strict=True), 1)],
        "measurements": [],
    }]}
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


# ----------------------------------------------------------------- dispatch
def _kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".fcsv"):
        return "fcsv"
    if name.endswith(".json"):
        return "json"
    raise LandmarkFileError(f"{path}: unknown landmark file type (use .csv, .fcsv or "
                            ".mrk.json)")


def read_landmarks(path: str | os.PathLike) -> Landmarks:
    """Read landmarks from ``.csv``, Slicer ``.fcsv`` or ``.mrk.json``, in world RAS mm.

    Slicer files in LPS are converted to RAS; the markup label is the id.
    ``metadata["coordinate_system"]`` records what the Slicer file used.
    """
    path = Path(path)
    kind = _kind(path)
    if kind == "csv":
        return _read_csv(path)
    if kind == "fcsv":
        return _read_fcsv(path)
    return _read_mrk_json(path)


def write_landmarks(landmarks: Landmarks, path: str | os.PathLike, *,
                    coordinate_system: str = "LPS") -> None:
    """Write landmarks (world RAS mm) as ``.csv``, Slicer ``.fcsv`` or ``.mrk.json``.

    CSV is always RAS mm (header ``id,x,y,z``). Slicer files are written in
    ``coordinate_system`` (``"LPS"``, Slicer's default, or ``"RAS"``), with the id as
    the label; they are 3D only. The file is written atomically.
    """
    path = Path(path)
    kind = _kind(path)
    system = _coordinate_system(coordinate_system, f"writing {path}")
    if kind != "csv" and landmarks.ndim != 3:
        raise LandmarkFileError(f"writing {path}: Slicer markups are 3D; these landmarks "
                                f"are {landmarks.ndim}D (save them as .csv)")
    with atomic_path(path) as tmp:
        if kind == "csv":
            _write_csv(landmarks, tmp)
        elif kind == "fcsv":
            _write_fcsv(landmarks, tmp, system)
        else:
            _write_mrk_json(landmarks, tmp, system)
