"""One real viewer, a handful of hostile files: each is refused with a notification and
the viewer keeps working (a layer can be added, drawn and removed after every refusal).

Issue 14 found a 1e30 mm voxel left the viewer broken (the next add_image raised
OverflowError) and a header claiming 3.8 GB froze it for seconds.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_reg import _reader
from napari_reg.widgets.load_widget import LoadWidget

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import hostile_corpus  # noqa: E402

HOSTILE = ["voxel_1e30.nii.gz", "srow_1e30.nii.gz", "claims_2gb.nii.gz", "lying_trailer.nii.gz",
           "gztrunc_0.5.nii.gz", "random_1.nii.gz", "trunc_352.nii.gz", "empty.nii.gz"]


@pytest.fixture
def reg_plugin(npe2pm):
    """napari's test fixtures block plugin discovery: register our manifest explicitly."""
    with npe2pm.tmp_plugin(package="napari-reg") as plugin:
        yield plugin


def _viewer_works(viewer, qtbot) -> None:
    """Add a layer in world space, draw it, remove it: what issue 14 saw break."""
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    layer = viewer.add_image(np.random.default_rng(0).random((12, 10, 8)), affine=affine,
                             name="probe")
    viewer.reset_view()
    qtbot.wait(10)
    assert np.isfinite(np.asarray(viewer.layers.extent.world)).all()
    viewer.layers.remove(layer)
    assert "probe" not in viewer.layers


def test_hostile_files_are_refused_and_the_viewer_keeps_working(
        make_napari_viewer, qtbot, tmp_path, reg_plugin, monkeypatch):
    files = {f.path.name: f.path for f in hostile_corpus.volume_corpus(tmp_path / "v", seed=0)}
    fixed, _ = hostile_corpus.good_pair(tmp_path / "good")
    reader_messages: list[str] = []
    panel_messages: list[str] = []
    monkeypatch.setattr(_reader, "_notify_error", reader_messages.append)
    monkeypatch.setattr("napari_reg.widgets.load_widget.show_error", panel_messages.append)
    viewer = make_napari_viewer()
    viewer.window.resize(1280, 800)
    panel = LoadWidget(viewer)
    viewer.window.add_dock_widget(panel)
    good = viewer.open(str(fixed), plugin="napari-reg")[0]
    for k, name in enumerate(HOSTILE):
        path = files.get(name)
        if path is None:  # a corpus variant this seed did not make
            continue
        before = len(reader_messages) + len(panel_messages)
        t0 = time.monotonic()
        if k % 2:  # through the Load panel, with real clicks
            panel.fixed_file.value = path
            qtbot.mouseClick(panel.open_fixed.native, Qt.LeftButton)
        else:  # through File > Open's path (napari's reader dispatch)
            viewer.open(str(path), plugin="napari-reg")
        assert time.monotonic() - t0 < 5.0, f"{name}: the viewer froze"
        # exactly one message per refused file, whichever way it was opened
        assert len(reader_messages) + len(panel_messages) == before + 1, name
        assert [lyr.name for lyr in viewer.layers] == [good.name], name
        _viewer_works(viewer, qtbot)
    assert any("voxel size" in m for m in reader_messages)
    assert any("memory budget" in m for m in reader_messages)
    # still usable for real work: the good image becomes the fixed one through the panel
    panel.fixed_file.value = fixed
    qtbot.mouseClick(panel.open_fixed.native, Qt.LeftButton)
    assert panel.fixed.value is not None and panel.fixed.value.name.startswith("good_fixed")
    viewer.screenshot(path="/tmp/napari_reg_hostile.png", canvas_only=False)
