"""Batch registration: resume after a crash, failures isolated, process pool, Dask, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_reg.batch import BatchError, plan_pairs, read_list, run_batch
from napari_reg.cli import main
from napari_reg.io.transform_files import read_itk_transform
from napari_reg.io.volumes import save_volume
from phantoms import homogeneous, phantom_volume

FAST = {"transform": "translation", "metric": "ncc", "levels": 2, "iterations": [30, 20],
        "samples": [2000, 3000], "init": "none"}
SHIFTS = [(3.0, -2.0, 1.0), (-2.5, 1.5, 2.0), (1.0, 2.5, -3.0)]


@pytest.fixture
def images(tmp_path: Path) -> tuple[str, list[str]]:
    """A fixed phantom and three moving copies shifted by known translations (files)."""
    shape, spacing = (22, 20, 18), (3.0, 3.0, 3.0)
    fixed = tmp_path / "fixed.nii.gz"
    save_volume(phantom_volume(shape, spacing), fixed)
    movings = []
    for k, shift in enumerate(SHIFTS):
        path = tmp_path / f"moving{k}.nii.gz"
        save_volume(phantom_volume(shape, spacing, transform=homogeneous(np.eye(3), shift)), path)
        movings.append(str(path))
    return str(fixed), movings


def _shift_of(pair_dir: Path) -> np.ndarray:
    return read_itk_transform(pair_dir / "transform.tfm")[:3, 3]


def test_batch_resumes_after_a_crash_without_redoing_finished_pairs(images, tmp_path) -> None:
    fixed, movings = images
    listing = tmp_path / "list.txt"
    listing.write_text("# pairs\n" + "\n".join(Path(m).name for m in movings)
                       + "\nnot_there.nii.gz\n")
    out = tmp_path / "out"
    pairs = plan_pairs(fixed, read_list(listing), out, FAST)
    assert [p.name for p in pairs] == ["moving0", "moving1", "moving2", "not_there"]
    # A crash in an earlier attempt of pair 2: outputs moved but no run.json, and a
    # leftover staging folder.
    (out / "moving2" / ".napari-reg-stale").mkdir(parents=True)
    (out / "moving2" / "transform.tfm").write_text("garbage")

    seen = []

    def crash_after_first(outcome) -> None:
        seen.append(outcome.status)
        if outcome.status == "done":
            raise KeyboardInterrupt  # Ctrl-C while the batch runs

    report = run_batch(pairs, workers=0, callback=crash_after_first, summary_dir=out)
    assert report.interrupted
    statuses = [o.status for o in report.outcomes]
    assert statuses == ["done", "not run", "not run", "failed"]
    assert "input file not found" in report.outcomes[3].message
    first_record = out / "moving0" / "run.json"
    stamp = first_record.stat().st_mtime_ns

    report = run_batch(pairs, workers=0, summary_dir=out)
    assert not report.interrupted and not report.ok
    assert [o.status for o in report.outcomes] == ["already done", "done", "done", "failed"]
    assert first_record.stat().st_mtime_ns == stamp  # not redone
    assert not (out / "moving2" / ".napari-reg-stale").exists()
    for k, shift in enumerate(SHIFTS):
        np.testing.assert_allclose(_shift_of(out / f"moving{k}"), shift, atol=0.3)
    table = report.table()
    assert "already done" in table and "4 pairs: 2 done, 1 already done, 1 failed" in table
    summary = json.loads((out / "batch_summary.json").read_text())
    assert [p["status"] for p in summary["pairs"]] == ["already done", "done", "done", "failed"]
    assert (out / "batch_summary.tsv").read_text().count("\n") == 5


def test_batch_on_two_local_processes(images, tmp_path) -> None:
    fixed, movings = images
    pairs = plan_pairs(fixed, movings[:2], tmp_path / "out", FAST)
    report = run_batch(pairs, workers=2)
    assert report.runner == "2 local processes"
    assert [o.status for o in report.outcomes] == ["done", "done"]
    np.testing.assert_allclose(_shift_of(tmp_path / "out" / "moving1"), SHIFTS[1], atol=0.3)


def test_batch_on_a_dask_local_cluster(images, tmp_path) -> None:
    import distributed  # the optional 'batch' extra

    fixed, movings = images
    pairs = plan_pairs(fixed, movings[:2] + [str(tmp_path / "missing.nii.gz")],
                       tmp_path / "out", FAST)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster:
        report = run_batch(pairs, scheduler=cluster.scheduler_address)
    assert report.runner.startswith("dask ")
    assert [o.status for o in report.outcomes] == ["done", "done", "failed"]
    np.testing.assert_allclose(_shift_of(tmp_path / "out" / "moving0"), SHIFTS[0], atol=0.3)


def test_unreachable_scheduler_is_a_clear_error_and_keeps_finished_work(images, tmp_path):
    fixed, movings = images
    pairs = plan_pairs(fixed, movings[:2], tmp_path / "out", FAST)
    run_batch(pairs[:1], workers=0)
    with pytest.raises(BatchError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        run_batch(pairs, scheduler="tcp://127.0.0.1:9", connect_timeout_s=1.0)
    assert (tmp_path / "out" / "moving0" / "run.json").is_file()


def test_missing_fixed_image_stops_before_anything_runs(tmp_path) -> None:
    with pytest.raises(BatchError, match="fixed image not found"):
        plan_pairs(tmp_path / "nope.nii.gz", ["a.nii.gz"], tmp_path)


def test_batch_command_line_and_resume(images, tmp_path, capsys) -> None:
    fixed, movings = images
    out = tmp_path / "cli"
    options = ["-o", str(out), "--workers", "0", "--transform", "translation", "--metric",
               "ncc", "--levels", "2", "--iterations", "30", "20"]
    assert main(["batch", "--fixed", fixed, *movings[:2], *options]) == 0
    assert "2 pairs: 2 done" in capsys.readouterr().out
    gone = str(tmp_path / "gone.nii.gz")
    assert main(["batch", "--fixed", fixed, *movings[:2], gone, *options]) == 1
    captured = capsys.readouterr()
    assert "3 pairs: 2 already done, 1 failed" in captured.out
    assert "input file not found" in captured.err


def test_batch_to_template_command(images, tmp_path, capsys) -> None:
    _, movings = images
    out = tmp_path / "tpl"
    argv = ["batch", "--to-template", *movings, "-o", str(out), "--workers", "0",
            "--transform", "translation", "--metric", "ncc", "--levels", "2",
            "--template-iterations", "2"]
    assert main(argv) == 0
    record = json.loads((out / "template" / "template.json").read_text())
    assert len(record["transforms"]) == 3 and record["history"]
    # Mean of the known shifts is the template's offset from the phantom: every pair's
    # shift relative to the template is the known shift minus that mean.
    mean_shift = np.mean(SHIFTS, axis=0)
    for k, shift in enumerate(SHIFTS):
        np.testing.assert_allclose(_shift_of(out / f"moving{k}"), np.subtract(shift, mean_shift),
                                   atol=0.4)
    assert main(argv) == 0  # resume: template reused, pairs already done
    assert "template already built" in capsys.readouterr().err


def test_a_corrupt_image_fails_its_pair_only(images, tmp_path) -> None:
    fixed, movings = images
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a volume at all" * 20)
    pairs = plan_pairs(fixed, [str(broken), movings[0]], tmp_path / "out", FAST)
    report = run_batch(pairs, workers=0)
    assert [o.status for o in report.outcomes] == ["failed", "done"]
    assert "broken.nii.gz" in report.outcomes[0].message
    assert not (tmp_path / "out" / "broken" / "run.json").exists()


def test_batch_resumes_after_its_worker_process_is_killed(images, tmp_path) -> None:
    """A hard crash: the worker process dies (SIGKILL) after the first pair finished."""
    import multiprocessing
    import os
    import signal

    fixed, movings = images
    out = tmp_path / "out"
    pairs = plan_pairs(fixed, movings, out, FAST)
    killed = []

    def kill_worker(outcome) -> None:
        if outcome.status == "done" and not killed:
            for child in multiprocessing.active_children():  # the pool's worker(s) only
                os.kill(child.pid, signal.SIGKILL)
                killed.append(child.pid)

    report = run_batch(pairs, workers=1, callback=kill_worker)
    assert killed and report.interrupted
    assert "worker process died" in report.runner
    first = [o.status for o in report.outcomes]
    assert first.count("done") >= 1 and "not run" in first
    report = run_batch(pairs, workers=0)
    assert report.ok
    assert sorted(o.status for o in report.outcomes) == sorted(
        ["already done" if s == "done" else "done" for s in first])


def test_batch_warns_about_an_intensity_metric_across_contrasts(images, tmp_path, capsys):
    fixed, _ = images
    t2 = tmp_path / "t2.nii.gz"
    save_volume(phantom_volume((22, 20, 18), (3.0, 3.0, 3.0), contrast="t2"), t2)
    argv = ["batch", "--fixed", fixed, str(t2), "-o", str(tmp_path / "o"), "--workers", "0",
            "--metric", "ssd", "--levels", "1", "--iterations", "3"]
    main(argv)
    assert "metric='mi'" in capsys.readouterr().err


def test_deformable_pairs_count_as_finished_only_with_their_field(images, tmp_path) -> None:
    fixed, movings = images
    params = dict(FAST, transform="syn", init="com")
    pairs = plan_pairs(fixed, movings[:1], tmp_path / "out", params)
    assert [o.status for o in run_batch(pairs, workers=0).outcomes] == ["done"]
    folder = tmp_path / "out" / "moving0"
    field = folder / "whole_map_field.nii.gz"
    assert field.is_file() and (folder / "jacobian.nii.gz").is_file()
    field.unlink()  # a crash after run.json was moved in, before the field
    assert [o.status for o in run_batch(pairs, workers=0).outcomes] == ["done"]
    assert field.is_file()
    assert [o.status for o in run_batch(pairs, workers=0).outcomes] == ["already done"]
