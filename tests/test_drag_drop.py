"""Medical volumes dropped on napari open through napari-reg, in a fresh napari settings
folder (``NAPARI_CONFIG``), through napari's own open path (no plugin named): a drop on
the canvas (what File > Open also calls) and ``viewer.open(path, plugin=None)``.

Each scenario runs in its own Python process (napari's settings are a process-wide
singleton, read once from NAPARI_CONFIG) under the Xvfb display pytest-xvfb provides.
The drop is a real ``QDropEvent`` with file URLs delivered to the canvas; napari's reader
dialog, if it appears, is answered by pressing its default (OK) button.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import nibabel as nib
import numpy as np
import pytest
import yaml

SCRIPT = textwrap.dedent('''
    import json, sys
    import napari
    from qtpy.QtCore import QMimeData, QPointF, Qt, QTimer, QUrl
    from qtpy.QtGui import QDropEvent
    from qtpy.QtWidgets import QApplication
    from napari._qt.dialogs.qt_reader_dialog import QtReaderDialog

    first, second, use_plugin_first = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    third = sys.argv[4]
    viewer = napari.Viewer(show=True)
    dialogs = []

    def answer_dialog():
        for widget in QApplication.topLevelWidgets():
            if isinstance(widget, QtReaderDialog) and widget.isVisible():
                dialogs.append(widget._get_plugin_choice())
                widget.btn_box.button(widget.btn_box.StandardButton.Ok).click()
        QTimer.singleShot(100, answer_dialog)

    QTimer.singleShot(100, answer_dialog)
    if use_plugin_first:
        viewer.window.add_plugin_dock_widget("napari-reg", "1. Load images")

    def drop(path):
        mime = QMimeData()
        mime.setUrls([QUrl.fromLocalFile(path)])
        event = QDropEvent(QPointF(50, 50), Qt.DropAction.CopyAction, mime,
                           Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier)
        viewer.window._qt_viewer.dropEvent(event)
        QApplication.processEvents()

    drop(first)
    after_drop = len(dialogs)
    # napari's programmatic open path with its reader preferences (napari 0.9's
    # viewer.open defaults to plugin="napari", its builtins, which ignores preferences)
    viewer.open(second, plugin=None)
    QApplication.processEvents()
    from napari.settings import get_settings
    layers = [{"name": l.name, "has_original_affine": "original_affine" in l.metadata,
               "plugin": getattr(l.source, "reader_plugin", None)} for l in viewer.layers]
    # napari 0.9's viewer.open(path) with no plugin argument: plugin="napari" (builtins)
    try:
        default_open = [getattr(l.source, "reader_plugin", None) for l in viewer.open(third)]
    except Exception as exc:
        default_open = f"{type(exc).__name__}: {exc}"[:300]
    print("RESULT" + json.dumps({"default_open": default_open,
        "dialogs": dialogs, "dialogs_after_drop": after_drop, "layers": layers,
        "extension2reader": dict(get_settings().plugins.extension2reader)}))
    viewer.close()
''')


def _volume(path):
    data = np.zeros((6, 5, 4), np.float32)
    data[2:4, 1:3, 1:3] = 7.0
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 3.0, 1.0])), str(path))
    return path


def _run(tmp_path, first, second, use_plugin_first: bool) -> dict:
    config = tmp_path / "napari_settings" / "settings.yaml"
    env = {**os.environ, "NAPARI_CONFIG": str(config)}
    third = _volume(tmp_path / ("third" + "".join(first.suffixes)))
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(first), str(second),
                           "1" if use_plugin_first else "0", str(third)],
                          capture_output=True, text=True, timeout=240, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT"):])
    result["saved"] = yaml.safe_load(config.read_text()) if config.exists() else {}
    return result


@pytest.mark.parametrize("suffix", [".nii.gz", ".img"])
def test_fresh_settings_one_dialog_defaulting_to_napari_reg(tmp_path, suffix):
    first = _volume(tmp_path / f"first{suffix}")
    second = _volume(tmp_path / f"second{suffix}")
    result = _run(tmp_path, first, second, use_plugin_first=False)
    # the first drop asks once, with napari-reg preselected; pressing OK opens it
    assert result["dialogs"] == ["Registration: napari-reg"], result
    names = [layer["name"] for layer in result["layers"]]
    assert names == ["first", "second"], result
    assert all(layer["has_original_affine"] for layer in result["layers"])  # our reader
    # napari-reg is now napari's preferred reader for its patterns, saved to the file
    pattern = "*" + suffix
    assert result["extension2reader"][pattern] == "napari-reg"
    assert result["saved"]["plugins"]["extension2reader"][pattern] == "napari-reg"


def test_no_dialog_once_the_plugin_was_used(tmp_path):
    first = _volume(tmp_path / "a.nii")
    second = _volume(tmp_path / "b.nii.gz")
    result = _run(tmp_path, first, second, use_plugin_first=True)
    assert result["dialogs"] == [], result
    assert [layer["name"] for layer in result["layers"]] == ["a", "b"]
    assert all(layer["has_original_affine"] for layer in result["layers"])
    # what the README says napari 0.9 does: viewer.open(path) without naming a plugin
    # takes plugin="napari" (its builtins) and never reads the preference: a .nii is read
    # by napari's builtin reader (voxels without their affine), not by napari-reg,
    # although napari-reg is the preferred reader of "*.nii"
    assert result["extension2reader"]["*.nii"] == "napari-reg"
    assert result["default_open"] == ["napari"], result["default_open"]


def test_an_existing_preference_is_kept(tmp_path):
    from napari.settings import NapariSettings

    from napari_reg._reader_preference import prefer_napari_reg_reader

    settings = NapariSettings(None)
    settings.plugins.extension2reader = {"*.nii": "some-other-reader"}
    added = prefer_napari_reg_reader(settings)
    assert "*.nii" not in added and "*.nii.gz" in added and "*.mnc" in added
    assert settings.plugins.extension2reader["*.nii"] == "some-other-reader"
    assert settings.plugins.extension2reader["*.mgz"] == "napari-reg"
    assert prefer_napari_reg_reader(settings) == []  # nothing left to add
