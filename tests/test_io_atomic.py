"""io/atomic.py: outputs appear whole (rename) and with the mode the umask gives."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from napari_reg.core.image import Volume
from napari_reg.io.atomic import atomic_path
from napari_reg.io.volumes import save_volume


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_outputs_get_the_umask_mode_not_0600(tmp_path, umask, mask):
    umask(mask)
    with atomic_path(tmp_path / "a.txt") as tmp:
        tmp.write_text("x")
    save_volume(Volume(np.zeros((2, 2, 2), np.float32), np.eye(4)), tmp_path / "v.nii.gz")
    for name in ("a.txt", "v.nii.gz"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~mask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "v.nii.gz"]


def test_failed_write_leaves_target_untouched(tmp_path):
    target = tmp_path / "keep.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
