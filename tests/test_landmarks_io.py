"""Landmark files: CSV and Slicer markups, LPS/RAS, pairing by id, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_reg.io.landmarks import (
    LandmarkError,
    LandmarkFileError,
    Landmarks,
    read_landmarks,
    write_landmarks,
)

PTS = np.array([[1.5, -2.25, 3.0], [10.0, 20.0, -30.125], [-0.1, 0.2, 1e-7]])
IDS = ["AC", "PC", "left eye, lateral"]  # a comma inside an id must survive


def _lm(ids=IDS, pts=PTS) -> Landmarks:
    return Landmarks(list(ids), np.array(pts))


@pytest.mark.parametrize("name", ["lm.csv", "lm.fcsv", "lm.mrk.json"])
@pytest.mark.parametrize("system", ["LPS", "RAS"])
def test_round_trip(tmp_path, name, system):
    write_landmarks(_lm(), tmp_path / name, coordinate_system=system)
    back = read_landmarks(tmp_path / name)
    assert back.ids == IDS
    np.testing.assert_array_equal(back.points, PTS)  # full precision, exact
    assert back.points.dtype == np.float64
    assert not list(tmp_path.glob(".*"))  # atomic write left no temporary


def test_csv_2d_round_trip_and_format(tmp_path):
    lm = Landmarks(["a", "b"], [[1.0, 2.0], [3.5, -4.0]])
    write_landmarks(lm, tmp_path / "p.csv")
    assert (tmp_path / "p.csv").read_text().splitlines() == ["id,x,y", "a,1.0,2.0",
                                                             "b,3.5,-4.0"]
    back = read_landmarks(tmp_path / "p.csv")
    assert back.ndim == 2 and back.ids == ["a", "b"]
    np.testing.assert_array_equal(back.points, lm.points)


def test_csv_accepts_mm_units_comments_and_spaces(tmp_path):
    path = tmp_path / "u.csv"
    path.write_text("# units = mm\n# exported by hand\nID, x_mm, y (mm), z [mm]\n"
                    " 1 , 1.0, 2.0, 3.0\n\n2,4,5,6\n")
    lm = read_landmarks(path)
    assert lm.ids == ["1", "2"]
    np.testing.assert_array_equal(lm.points, [[1, 2, 3], [4, 5, 6]])


def test_header_only_csv_is_empty_set(tmp_path):
    write_landmarks(Landmarks([], np.zeros((0, 3))), tmp_path / "e.csv")
    lm = read_landmarks(tmp_path / "e.csv")
    assert len(lm) == 0 and lm.ndim == 3


def test_lps_ras_on_known_point(tmp_path):
    # RAS (10, 20, 30) is LPS (-10, -20, 30).
    lm = Landmarks(["p"], [[10.0, 20.0, 30.0]])
    write_landmarks(lm, tmp_path / "a.fcsv", coordinate_system="LPS")
    text = (tmp_path / "a.fcsv").read_text()
    assert "# CoordinateSystem = LPS" in text
    assert "1,-10.0,-20.0,30.0,0,0,0,1,1,1,0,p,," in text
    write_landmarks(lm, tmp_path / "a.mrk.json", coordinate_system="LPS")
    node = json.loads((tmp_path / "a.mrk.json").read_text())["markups"][0]
    assert node["coordinateSystem"] == "LPS"
    assert node["controlPoints"][0]["position"] == [-10.0, -20.0, 30.0]
    assert node["controlPoints"][0]["label"] == "p"
    # Files written by others: LPS is converted, RAS is kept, old numeric codes too.
    for system, code, expect in [("LPS", "LPS", [-1, -2, 3]), ("RAS", "RAS", [1, 2, 3]),
                                 ("LPS", "1", [-1, -2, 3]), ("RAS", "0", [1, 2, 3])]:
        path = tmp_path / f"s{code}.fcsv"
        path.write_text("# Markups fiducial file version = 4.10\n"
                        f"# CoordinateSystem = {code}\n"
                        "# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,"
                        "associatedNodeID\n"
                        "vtkMRMLMarkupsFiducialNode_0,1,2,3,0,0,0,1,1,1,0,F-1,,vtkNode1\n")
        lm = read_landmarks(path)
        assert lm.ids == ["F-1"] and lm.metadata["coordinate_system"] == system
        np.testing.assert_array_equal(lm.points, [expect])
    path = tmp_path / "r.mrk.json"
    path.write_text(json.dumps({"markups": [{"type": "Fiducial", "coordinateSystem": "RAS",
                                             "controlPoints": [{"label": "F-1",
                                                                "position": [1, 2, 3]}]}]}))
    np.testing.assert_array_equal(read_landmarks(path).points, [[1, 2, 3]])


def test_slicer_json_example_and_unplaced_points(tmp_path):
    # Slicer's documented minimal example (LPS), plus a point not placed yet.
    doc = {"@schema": "markups-schema-v1.0.0.json#", "markups": [
        {"type": "Fiducial", "coordinateSystem": "LPS", "controlPoints": [
            {"label": "F-1", "position": [-53.388409961685827, -73.33572796934868, 0.0]},
            {"label": "F-2", "position": [49.8682950191571, -88.58955938697324, 0.0]},
            {"label": "F-3", "positionStatus": "undefined"},
        ]}]}
    (tmp_path / "ex.mrk.json").write_text(json.dumps(doc))
    lm = read_landmarks(tmp_path / "ex.mrk.json")
    assert lm.ids == ["F-1", "F-2"]
    np.testing.assert_array_equal(lm.points[0], [53.388409961685827, 73.33572796934868, 0.0])


def test_fcsv_label_falls_back_to_id(tmp_path):
    path = tmp_path / "n.fcsv"
    path.write_text("# Markups fiducial file version = 4.11\n# CoordinateSystem = RAS\n"
                    "# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,"
                    "associatedNodeID\n7,1,2,3,0,0,0,1,1,1,0,,,\n")
    assert read_landmarks(path).ids == ["7"]


def test_pairing_by_id_not_row_order(tmp_path):
    fixed = _lm()
    order = [2, 0]  # shuffled, and "PC" missing
    moving = Landmarks([IDS[i] for i in order] + ["extra"],
                       np.vstack([PTS[order] + 100.0, [[0.0, 0.0, 0.0]]]))
    write_landmarks(moving, tmp_path / "m.csv")
    pairs = fixed.pair_with(read_landmarks(tmp_path / "m.csv"))
    assert pairs.ids == ["AC", "left eye, lateral"]
    np.testing.assert_array_equal(pairs.fixed, PTS[[0, 2]])
    np.testing.assert_array_equal(pairs.moving, PTS[[0, 2]] + 100.0)
    assert pairs.unpaired == ["PC", "extra"]
    ids, f, m, unpaired = pairs  # tuple-style unpacking works too
    assert f.shape == m.shape == (2, 3)
    none = fixed.pair_with(Landmarks(["zz"], [[0.0, 0.0, 0.0]]))
    assert none.ids == [] and none.fixed.shape == (0, 3)
    with pytest.raises(LandmarkError, match="2D"):
        fixed.pair_with(Landmarks(["a"], [[0.0, 0.0]]))


def test_landmarks_validation():
    with pytest.raises(LandmarkError, match="duplicate landmark ids \\['a'\\]"):
        Landmarks(["a", "b", "a"], np.zeros((3, 3)))
    with pytest.raises(LandmarkError, match="2 ids for 3"):
        Landmarks(["a", "b"], np.zeros((3, 3)))
    with pytest.raises(LandmarkError, match="shape"):
        Landmarks(["a"], np.zeros((1, 4)))
    with pytest.raises(LandmarkError, match="infinite"):
        Landmarks(["a"], [[np.nan, 0.0, 0.0]])
    with pytest.raises(LandmarkError, match="empty"):
        Landmarks([" "], [[0.0, 0.0, 0.0]])


@pytest.mark.parametrize("content,message", [
    ("", "empty"),
    ("   \n\n", "empty"),
    ("# only a comment\n", "no header"),
    ("name,x,y,z\na,1,2,3\n", "header must be"),
    ("id,x,y,z,extra\na,1,2,3,4\n", "header must be"),
    ("id,x,z,y\na,1,2,3\n", "column 'z' should be 'y'"),
    ("id,x\na,1\n", "header must be"),
    ("id,x_cm,y_cm,z_cm\na,1,2,3\n", "'cm'"),
    ("id,x (um),y,z\na,1,2,3\n", "'um'"),
    ("# units = inch\nid,x,y,z\na,1,2,3\n", "'inch'"),
    ("id,x,y,z\na,1,2\n", "line 2: expected 4 values"),
    ("id,x,y,z\na,1,two,3\n", "line 2: y is not a number: 'two'"),
    ("id,x,y,z\na,1,inf,3\n", "finite"),
    ("id,x,y,z\na,1,2,3\nb,4,5,6\na,7,8,9\n", "duplicate landmark ids \\['a'\\]"),
    ("id,x,y,z\n,1,2,3\n", "must not be empty"),
])
def test_csv_errors(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(LandmarkFileError, match=message) as info:
        read_landmarks(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("content,message", [
    ("# CoordinateSystem = XYZ\n1,1,2,3\n", "unknown coordinate system 'XYZ'"),
    ("# CoordinateSystem = RAS\n1,1,2,3,0,0,0,1,1,1,0,a,,\n1,1,x,3,0,0,0,1,1,1,0,b,,\n",
     "y is not a number"),
    ("# CoordinateSystem = RAS\n1,1,2\n", "3 fields for 14 columns"),
    ("# columns = id,label,desc\n1,a,b\n", "lack"),
    ("# CoordinateSystem = RAS\n1,1,2,3,0,0,0,1,1,1,0,a,,\n2,4,5,6,0,0,0,1,1,1,0,a,,\n",
     "duplicate"),
])
def test_fcsv_errors(tmp_path, content, message):
    path = tmp_path / "bad.fcsv"
    path.write_text(content)
    with pytest.raises(LandmarkFileError, match=message):
        read_landmarks(path)


@pytest.mark.parametrize("doc,message", [
    ("{not json", "not valid JSON"),
    ({"points": []}, "no 'markups'"),
    ([1, 2], "no 'markups'"),
    ({"markups": [{}, {}]}, "2 markups nodes"),
    ({"markups": [{"coordinateSystem": "IJK", "controlPoints": []}]}, "coordinate system"),
    ({"markups": [{"coordinateUnits": "um", "controlPoints": []}]}, "'um'"),
    ({"markups": [{"controlPoints": {"a": 1}}]}, "not a list"),
    ({"markups": [{"controlPoints": [{"label": "a", "position": [1, 2]}]}]}, "3 numbers"),
    ({"markups": [{"controlPoints": [{"label": "a", "position": [1, "b", 2]}]}]},
     "not a number"),
    ({"markups": [{"controlPoints": [{"label": "a", "position": [1, 2, 3]},
                                     {"label": "a", "position": [1, 2, 3]}]}]}, "duplicate"),
])
def test_mrk_json_errors(tmp_path, doc, message):
    path = tmp_path / "bad.mrk.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    with pytest.raises(LandmarkFileError, match=message):
        read_landmarks(path)


def test_file_level_errors(tmp_path):
    with pytest.raises(LandmarkFileError, match="not found"):
        read_landmarks(tmp_path / "missing.csv")
    with pytest.raises(LandmarkFileError, match="unknown landmark file type"):
        read_landmarks(tmp_path / "points.xlsx")
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(LandmarkFileError, match="UTF-8"):
        read_landmarks(tmp_path / "bin.csv")
    with pytest.raises(LandmarkFileError, match="Slicer markups are 3D"):
        write_landmarks(Landmarks(["a"], [[1.0, 2.0]]), tmp_path / "a.fcsv")
    with pytest.raises(LandmarkFileError, match="coordinate system"):
        write_landmarks(_lm(), tmp_path / "a.fcsv", coordinate_system="IJK")
    assert not (tmp_path / "a.fcsv").exists()


def test_fcsv_read_as_slicer_reads_it(tmp_path):
    header = ("# Markups fiducial file version = 5.6\n"
              "# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID\n")
    # Windows line ends and a stray carriage return inside a description: Slicer splits
    # rows at '\n' only and keeps the '\r' in its field.
    path = tmp_path / "cr.fcsv"
    path.write_bytes((header.replace("\n", "\r\n") +
                      "n0,1,2,3,0,0,0,1,1,1,0,F-1,tip of\rthe nose,vtkNode1\r\n"
                      "n1,4,5,6,0,0,0,1,1,1,0,F-2,\"quoted, with comma\",\r\n").encode())
    lm = read_landmarks(path)
    assert lm.ids == ["F-1", "F-2"]
    # versioned, no CoordinateSystem line: LPS, Slicer's default since 4.11
    assert lm.metadata["coordinate_system"] == "LPS"
    np.testing.assert_array_equal(lm.points, [[-1, -2, 3], [-4, -5, 6]])
    # unversioned (Slicer 3: label,x,y,z,sel,vis): RAS as written
    (tmp_path / "s3.fcsv").write_text("A,1,2,3,1,1\nB,4,5,6,1,1\n")
    lm = read_landmarks(tmp_path / "s3.fcsv")
    assert lm.ids == ["A", "B"] and lm.metadata["coordinate_system"] == "RAS"
    np.testing.assert_array_equal(lm.points, [[1, 2, 3], [4, 5, 6]])
