"""Fuzz: seeded malformed volumes, transforms and landmarks through the reader and the CLI.

Every file is one corruption of a valid one (benchmarks/hostile_corpus.py). The reader
must return layers or napari's "no layers" value with one notification; every command
must exit with 0 or a one-line error, never a traceback, never touching its inputs.
"""

from __future__ import annotations

import hashlib
import resource
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_reg import _reader
from napari_reg.cli import main
from napari_reg.io.volumes import VolumeReadError, load_volume

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import hostile_corpus  # noqa: E402

FAST = ["--levels", "1", "--iterations", "8", "-q"]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hostile")


@pytest.fixture(scope="module")
def good(work):
    return hostile_corpus.good_pair(work / "good")


@pytest.fixture(scope="module")
def volumes(work):
    return hostile_corpus.volume_corpus(work / "volumes", seed=0, per_field=2)


def _digest(paths) -> list[str]:
    return [hashlib.sha1(Path(p).read_bytes()).hexdigest() for p in paths]


def _run(argv, capsys) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    if code != 0:
        errors = [ln for ln in err.splitlines() if ln.strip()]
        assert len(errors) == 1, err  # one line
    return code, err


def test_the_corpus_is_large_and_mostly_refused(volumes):
    assert len(volumes) >= 120
    refused = 0
    for f in volumes:
        try:
            load_volume(f.path)
        except VolumeReadError as exc:
            refused += 1
            assert str(f.path.name) in str(exc) or f.path.stem in str(exc)
            assert "\n" not in str(exc)
    assert refused >= len(volumes) // 2


def test_reader_refuses_with_one_notification_and_never_raises(volumes, monkeypatch):
    messages: list[str] = []
    monkeypatch.setattr(_reader, "_notify_error", messages.append)
    for f in volumes:
        before = len(messages)
        layers = _reader.read_volumes(str(f.path))
        if layers[0][0] is None:  # napari's "no layers"
            assert len(messages) == before + 1, f.what
        else:
            assert len(messages) == before, f.what
            data, kwargs, _ = layers[0]
            assert np.all(np.isfinite(kwargs["affine"]))
    # The hostile headers were refused before allocating: this process stayed small.
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss < 2 * 1024 * 1024  # kB


def test_headers_claiming_gigabytes_are_refused_without_reading(work, volumes):
    by_name = {f.path.name: f for f in volumes}
    for name, reason in (("claims_2gb.nii.gz", "memory budget"),
                         ("claims_2gb.nii", "memory budget"),
                         ("lying_trailer.nii.gz", "holds less"),
                         ("voxel_1e30.nii.gz", "voxel size"),
                         ("srow_1e30.nii.gz", "voxel size")):
        with pytest.raises(VolumeReadError, match=reason):
            load_volume(by_name[name].path)


def test_cli_never_tracebacks_on_malformed_volumes(good, volumes, work, capsys):
    fixed, moving = good
    identity = work / "identity.tfm"
    identity.write_text("#Insight Transform File V1.0\n#Transform 0\n"
                        "Transform: AffineTransform_double_3_3\n"
                        "Parameters: 1 0 0 0 1 0 0 0 1 0 0 0\nFixedParameters: 0 0 0\n")
    for k, f in enumerate(volumes[::3]):  # a third of them: the suite stays fast
        out = work / "cli" / f"v{k}"
        before = _digest([f.path, fixed])
        code, _ = _run(["apply", str(identity), "--reference", str(fixed), "--input",
                        str(f.path), "-o", str(out / "a.nii.gz")], capsys)
        assert (out / "a.nii.gz").exists() == (code == 0), f.what
        assert _digest([f.path, fixed]) == before, f.what
    for name in ("voxel_1e30.nii.gz", "n1_dim1_0.nii", "trunc_352.nii.gz"):
        path = work / "volumes" / name
        if not path.exists():
            continue
        code, err = _run(["register", str(path), str(moving), "-o", str(work / "reg"), *FAST],
                         capsys)
        assert code == 1 and "fixed image" in err
        assert not (work / "reg").exists()


def test_malformed_and_absurd_transforms_are_refused_by_role(good, work, capsys):
    fixed, moving = good
    files = hostile_corpus.transform_corpus(work / "transforms", seed=0)
    fields = hostile_corpus.field_corpus(work / "fields", seed=0)
    for k, f in enumerate(files + fields):
        out = work / "tfm" / f"t{k}"
        code, err = _run(["apply", str(f.path), "--reference", str(fixed), "--input",
                          str(moving), "-o", str(out / "a.nii.gz")], capsys)
        assert code == 1, f"{f.what} was accepted"
        assert not out.exists()
    code, err = _run(["register", str(fixed), str(moving), "--initial",
                      str(work / "transforms" / "singular.tfm"), "-o", str(work / "r"), *FAST],
                     capsys)
    assert code == 1 and "initial transform" in err and "singular" in err


def test_landmarks_far_outside_both_images_are_refused(good, work, capsys):
    fixed, moving = good
    cases = dict((f.path.name, (f.path, m)) for f, m in
                 hostile_corpus.landmark_corpus(work / "landmarks", seed=0))
    for name, (path, partner) in cases.items():
        code, err = _run(["register", str(fixed), str(moving), "--landmarks", str(path),
                          str(partner), "-o", str(work / "lm" / name), *FAST], capsys)
        if name in ("far_away.csv", "all_far.csv"):
            assert code == 1 and "fixed landmarks" in err and "far outside" in err
        if code != 0:
            assert not (work / "lm" / name).exists()


def test_commands_refuse_to_overwrite_inputs(good, work, capsys):
    fixed, moving = good
    atlas = work / "atlas"
    atlas.mkdir()
    for name in ("image.nii.gz", "labels.nii.gz"):
        shutil.copy(moving, atlas / name)
    inputs = [fixed, atlas / "image.nii.gz", atlas / "labels.nii.gz"]
    before = _digest(inputs)
    seg = ["--levels", "1", "--fusion", "majority"]
    code, err = _run(["segment", str(fixed), "--atlas", str(atlas / "image.nii.gz"),
                      str(atlas / "labels.nii.gz"), "-o", str(atlas), "--overwrite", *seg],
                     capsys)
    assert code == 1 and "input file" in err
    out = work / "seg"
    out.mkdir()
    shutil.copy(fixed, out / "confidence.nii.gz")
    code, err = _run(["segment", str(out / "confidence.nii.gz"), "--atlas",
                      str(atlas / "image.nii.gz"), str(atlas / "labels.nii.gz"), "-o", str(out),
                      "--overwrite", *seg], capsys)
    assert code == 1 and "input file" in err
    tmpl = work / "tmpl"
    tmpl.mkdir()
    shutil.copy(moving, tmpl / "template.nii.gz")
    code, err = _run(["template", str(fixed), str(tmpl / "template.nii.gz"), "-o", str(tmpl),
                      "--template-iterations", "1", "--levels", "1", "--workers", "0"], capsys)
    assert code == 1 and "input file" in err
    assert _digest(inputs) == before
    assert _digest([out / "confidence.nii.gz"]) == _digest([fixed])
    assert _digest([tmpl / "template.nii.gz"]) == _digest([moving])


def test_template_images_with_one_name_get_distinct_transforms(good, work, capsys):
    fixed, moving = good
    for sub, src in (("a", fixed), ("b", moving)):
        (work / sub).mkdir()
        shutil.copy(src, work / sub / "t1.nii.gz")
    out = work / "tmpl2"
    code, err = _run(["template", str(work / "a" / "t1.nii.gz"), str(work / "b" / "t1.nii.gz"),
                      "-o", str(out), "--template-iterations", "1", "--levels", "1",
                      "--workers", "0"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (out / "transforms").iterdir()) == ["t1.tfm", "t1_2.tfm"]


def test_a_real_process_prints_exactly_one_line(good, volumes, work):
    """nibabel logs its header repairs to the process's own stderr (a handler made at
    import time, which capsys cannot see): only our one line per command may show."""
    import os
    import subprocess

    fixed, _ = good
    by_name = {f.path.name: f.path for f in volumes}
    names = [n for n in ("mgh_version_0.mgh", "n1_datatype_0.nii", "trunc_352.nii.gz",
                         "voxel_1e30.nii.gz") if n in by_name]
    script = ("import sys\nfrom napari_reg.cli import main\n"
              "codes = [main(['register', sys.argv[1], m, '-o', sys.argv[2], '-q', "
              "'--levels', '1']) for m in sys.argv[3:]]\nsys.exit(max(codes))\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.run([sys.executable, "-c", script, str(fixed), str(work / "one"),
                           *[str(by_name[n]) for n in names]],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == len(names), proc.stderr
    assert all(ln.startswith("napari-reg register: error: moving image: ") for ln in lines)


def test_hand_edited_run_records_are_one_line_errors(good, work, capsys):
    fixed, moving = good
    for f in hostile_corpus.record_corpus(work / "records", fixed, moving):
        code, err = _run(["register", "--replay", str(f.path), "-o", str(work / "rec"),
                          "-q"], capsys)
        assert code == 1, f.what
        assert "internal error" not in err, err
        assert not (work / "rec").exists()


def test_multi_member_gzip_loads_and_its_truncation_is_refused(good, work):
    """bgzip-style files (many gzip members; the trailer only sizes the last one) are
    checked member by member: a whole one loads, a cut one is refused before reading."""
    import gzip

    fixed, _ = good
    raw = gzip.decompress(fixed.read_bytes())
    members = b"".join(gzip.compress(raw[i:i + 4096]) for i in range(0, len(raw), 4096))
    whole, cut = work / "bgzip.nii.gz", work / "bgzip_cut.nii.gz"
    whole.write_bytes(members + b"\0" * 64)  # with the zero padding some tools add
    cut.write_bytes(members[: len(members) // 2])
    assert np.array_equal(load_volume(whole).data, load_volume(fixed).data)
    with pytest.raises(VolumeReadError, match="holds less"):
        load_volume(cut)
