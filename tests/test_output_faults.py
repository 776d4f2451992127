"""Output sets under faults: kills at every rename, SIGTERM, read-only and full disks.

The rule (io/output_set.py): an output set appears whole or not at all, never replaces an
input, and leaves no staging behind once the next run has looked at the folder.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from napari_reg.cli import main
from napari_reg.io.output_set import OutputSet, OutputSetError, check_output_plan, clean_stale

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import hostile_corpus  # noqa: E402

NAMES = ["a.txt", "sub/b.txt", "run.json"]
_WRITER = textwrap.dedent("""
    import sys
    from napari_reg.io.output_set import OutputSet
    names = ["a.txt", "sub/b.txt", "run.json"]
    with OutputSet(sys.argv[1], marker="run.json", overwrite=True, planned=names) as out:
        for name in names:
            out.path(name).write_text("new " + name)
""")
FAST = ["--levels", "1", "--iterations", "8", "-q"]


def _env(**extra) -> dict:
    src = str(Path(__file__).resolve().parents[1] / "src")
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""),
            **extra}


def _write_set(folder: Path, fault: str = "") -> subprocess.CompletedProcess:
    env = _env(NAPARI_REG_FAULT=fault) if fault else _env()
    return subprocess.run([sys.executable, "-c", _WRITER, str(folder)], env=env,
                          capture_output=True, text=True, timeout=60)


def _staging(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if ".napari-reg-" in p.name] if folder.exists() \
        else []


def _visible(folder: Path) -> set[str]:
    if not folder.exists():
        return set()
    return {str(p.relative_to(folder)) for p in folder.rglob("*")
            if p.is_file() and ".napari-reg-" not in str(p)}


@pytest.mark.parametrize("sig", ["KILL", "TERM"])
def test_a_new_folder_appears_whole_or_not_at_all(tmp_path, sig):
    out = tmp_path / "new"
    proc = _write_set(out, f"rename:1:{sig}")
    assert proc.returncode != 0
    if sig == "KILL":
        assert not out.exists()  # killed before its one rename: nothing visible
        assert _staging(tmp_path)  # (the dead process's staging is still there)
    else:  # SIGTERM is held back during the commit, then delivered: the set is whole
        assert _visible(out) == set(NAMES)
    clean_stale(tmp_path)  # what the next run does first
    assert not _staging(tmp_path)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_sigkill_at_each_rename_into_an_existing_folder_rolls_forward(tmp_path, n):
    out = tmp_path / "existing"
    out.mkdir()
    (out / "user.txt").write_text("mine")
    for name in NAMES:  # an older complete set
        (out / name).parent.mkdir(exist_ok=True)
        (out / name).write_text("old " + name)
    proc = _write_set(out, f"rename:{n}:KILL")
    assert proc.returncode == -signal.SIGKILL
    # The old marker went first: the folder never claims to hold a finished set now.
    assert not (out / "run.json").exists()
    # The next run finishes the journal (every staged file was complete), cleans up.
    clean_stale(out)
    assert not _staging(out)
    assert {name: (out / name).read_text() for name in NAMES} == {
        name: "new " + name for name in NAMES}
    assert (out / "user.txt").read_text() == "mine"


@pytest.mark.parametrize("n", [1, 2])
def test_an_older_result_is_replaced_whole_even_under_sigkill(tmp_path, n):
    out = tmp_path / "result"
    for name in NAMES:  # only an older complete set: the folder is replaced as one
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("old " + name)
    proc = _write_set(out, f"rename:{n}:KILL")
    assert proc.returncode == -signal.SIGKILL
    contents = {name: (out / name).read_text() for name in NAMES if (out / name).exists()}
    # the old set whole (killed before the first rename) or no folder: never a mix
    assert contents in ({name: "old " + name for name in NAMES}, {})
    assert (n == 1) == bool(contents)
    clean_stale(tmp_path)
    assert not _staging(tmp_path)
    assert _write_set(out).returncode == 0  # and the next run writes it whole
    assert {name: (out / name).read_text() for name in NAMES} == {
        name: "new " + name for name in NAMES}
    assert not _staging(tmp_path)


def test_sigterm_at_a_rename_is_held_until_the_set_is_whole(tmp_path):
    out = tmp_path / "existing"
    out.mkdir()
    (out / "user.txt").write_text("mine")
    proc = _write_set(out, "rename:2:TERM")
    assert proc.returncode == -signal.SIGTERM
    assert _visible(out) == {"user.txt", *NAMES}
    assert not _staging(out)


def test_the_plan_refuses_inputs_shared_names_and_existing_files(tmp_path):
    source = tmp_path / "in.nii.gz"
    source.write_text("x")
    link = tmp_path / "hard.nii.gz"
    os.link(source, link)
    with pytest.raises(OutputSetError, match="input file"):
        check_output_plan([link], [source])  # the same file under another name
    with pytest.raises(OutputSetError, match="share the name"):
        check_output_plan([tmp_path / "o/t.tfm", tmp_path / "o/../o/t.tfm"], [])
    with pytest.raises(OutputSetError, match="exists"):
        check_output_plan([source], [])
    with OutputSet(tmp_path / "o", inputs=[source]) as out, pytest.raises(OutputSetError):
        out.path("../in.nii.gz")
    assert source.read_text() == "x"


def test_a_failure_while_writing_leaves_nothing(tmp_path):
    out = tmp_path / "o"
    with pytest.raises(RuntimeError), OutputSet(out, marker="run.json") as outputs:
        outputs.path("a.txt").write_text("a")
        raise RuntimeError("disk trouble")
    assert not out.exists() and not _staging(tmp_path)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return hostile_corpus.good_pair(tmp_path_factory.mktemp("good"))


def test_register_killed_mid_commit_then_rerun_is_whole(good, tmp_path):
    fixed, moving = good
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("user file")
    argv = [sys.executable, "-m", "napari_reg.cli", "register", str(fixed), str(moving),
            "-o", str(out), *FAST]
    killed = subprocess.run(argv, env=_env(NAPARI_REG_FAULT="rename:2:KILL"),
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL
    assert not (out / "run.json").exists()
    again = subprocess.run([*argv, "--overwrite"], env=_env(), capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0, again.stderr
    assert _visible(out) == {"notes.txt", "transform.tfm", "warped.nii.gz", "run.json"}
    assert not _staging(out) and not _staging(tmp_path)


def test_sigterm_while_registering_exits_143_and_leaves_nothing(tmp_path):
    from napari_reg._sample_data import sample_data_dir

    data = sample_data_dir()
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "napari_reg.cli", "register",
         str(data / "mni_t1_fixed.nii.gz"), str(data / "mni_t2like_moving.nii.gz"),
         "-o", str(out), "--levels", "3", "--transform", "syn"],
        env=_env(), stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:  # the first finished pyramid level: deep inside the run
        if "level" in line:
            break
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "no outputs written" in err
    assert not out.exists() and not _staging(tmp_path)


def _one_line_error(capsys) -> str:
    """The error: one line, the last one (progress lines may come before it)."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    errors = [ln for ln in err.splitlines() if "error" in ln]
    assert len(errors) == 1 and err.splitlines()[-1] == errors[0], err
    return errors[0]


def test_read_only_output_folder_is_one_line(good, tmp_path, capsys):
    fixed, moving = good
    ro = tmp_path / "ro"
    ro.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)],
        capture_output=True).returncode == 0
    if not mounted:
        if os.geteuid() == 0:
            # root ignores a folder's mode bits, so without a read-only mount there is no
            # read-only folder to write into; CI runs as root with mount and runs this
            pytest.skip("running as root without mount: a folder cannot be made read-only")
        ro.chmod(0o555)
    try:
        code = main(["register", str(fixed), str(moving), "-o", str(ro / "out"), *FAST])
        assert code == 1
        assert "cannot write" in _one_line_error(capsys)
        code = main(["apply", str(_identity(tmp_path)), "--reference", str(fixed),
                     "--input", str(moving), "-o", str(ro / "a.nii.gz")])
        assert code == 1
        _one_line_error(capsys)
    finally:
        if mounted:
            subprocess.run(["umount", str(ro)], capture_output=True)
        else:
            ro.chmod(0o755)


def _identity(folder: Path) -> Path:
    path = folder / "identity.tfm"
    path.write_text("#Insight Transform File V1.0\n#Transform 0\n"
                    "Transform: AffineTransform_double_3_3\n"
                    "Parameters: 1 0 0 0 1 0 0 0 1 0 0 0\nFixedParameters: 0 0 0\n")
    return path


@pytest.fixture
def tiny_disk(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(disk)],
                             capture_output=True)
    if mounted.returncode != 0:
        # a full disk needs a small filesystem of its own; CI (root) mounts one and runs this
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip()[:80]}): "
                    "full-disk behaviour not testable without it")
    (disk / "filler").write_bytes(b"\0" * 196_000)
    yield disk
    subprocess.run(["umount", str(disk)], capture_output=True)


def test_full_disk_register_and_segment_leave_no_partial_output(good, tiny_disk, capsys):
    fixed, moving = good
    code = main(["register", str(fixed), str(moving), "-o", str(tiny_disk / "reg"), *FAST])
    assert code == 1
    assert "No space left" in _one_line_error(capsys)
    code = main(["segment", str(fixed), "--atlas", str(moving), str(moving), "-o",
                 str(tiny_disk / "seg"), "--levels", "1", "--fusion", "majority"])
    assert code == 1
    _one_line_error(capsys)
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["filler"]


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


# counts threads through /proc: Linux only (CI is Linux, so it runs there)
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_sigterm_stops_a_batch_and_its_workers_cleanly(tmp_path):
    import shutil
    import time

    from napari_reg._sample_data import sample_data_dir

    data = sample_data_dir()
    movings = []
    for k in range(2):
        movings.append(tmp_path / f"m{k}.nii.gz")
        shutil.copy(data / "mni_t2like_moving.nii.gz", movings[-1])
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "napari_reg.cli", "batch", "--fixed",
         str(data / "mni_t1_fixed.nii.gz"), *map(str, movings), "-o", str(out),
         "--workers", "2", "--transform", "syn"],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(_children(proc.pid)) < 3 and time.monotonic() < deadline:  # 2 workers + tracker
        time.sleep(0.2)
    time.sleep(3.0)  # the workers are importing / registering
    workers = _children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    deadline = time.monotonic() + 5
    for pid in workers:  # the workers were told too, and end (the resource tracker
        cmdline = Path(f"/proc/{pid}/cmdline")  # follows its parent by itself)
        if not cmdline.exists() or b"resource_tracker" in cmdline.read_bytes():
            continue
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(
            f"/proc/{pid}/status").read_text()
    assert not _staging(tmp_path)
    for k in range(2):  # each pair: absent or whole
        folder = out / f"m{k}"
        assert not _visible(folder) or {"transform.tfm", "warped.nii.gz",
                                        "run.json"} <= _visible(folder)


def test_sigterm_during_the_commit_keeps_the_whole_set_and_says_so(good, tmp_path):
    fixed, moving = good
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "napari_reg.cli", "register", str(fixed),
                           str(moving), "-o", str(out), *FAST],
                          env=_env(NAPARI_REG_FAULT="rename:1:TERM"), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 143, proc.stderr
    assert _visible(out) == {"transform.tfm", "warped.nii.gz", "run.json"}
    assert "were complete before the signal and are kept" in proc.stderr
    assert "no outputs written" not in proc.stderr and "Traceback" not in proc.stderr
    assert not _staging(tmp_path)
