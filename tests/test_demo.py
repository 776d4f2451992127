"""``napari-reg demo``: run as a user would (a subprocess), under the Xvfb display that
pytest-xvfb provides, and look at the screenshot's pixels."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
from PIL import Image
from scipy import ndimage


def run_demo(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "napari_reg.cli", "demo", *args],
        capture_output=True, text=True, timeout=180, env=env,
    )


def test_demo_screenshot_shows_both_volumes(tmp_path):
    out = tmp_path / "demo.png"
    proc = run_demo(["--screenshot", str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "could not be docked" not in proc.stderr  # every manifest widget docked
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.png"]  # no temporaries

    rgb = np.asarray(Image.open(out).convert("RGB")).astype(int)
    # the whole window, filling pytest-xvfb's 1280x800 screen (pyproject) and no more:
    # docking the panels must not push its bottom off a laptop screen
    assert rgb.shape[:2] == (800, 1280), rgb.shape
    assert rgb.std() > 20  # not blank
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    # The moving volume: magenta (red and blue high, green low); its largest connected
    # patch is the brain on the canvas (the layer-list thumbnail is a small one).
    magenta = (r > 100) & (b > 100) & (g < 0.7 * np.minimum(r, b))
    patches, n = ndimage.label(ndimage.binary_dilation(magenta, iterations=4))
    assert n >= 1
    sizes = ndimage.sum(magenta, patches, range(1, n + 1))
    assert sizes.max() > 5000
    brain = patches == 1 + np.argmax(sizes)
    # The fixed volume: neutral grey where it shows without the magenta overlay, i.e.
    # where the T2-like moving image is dark (white matter) and along the misregistered
    # brain edge: inside the magenta brain's bounding box (the panels are outside it).
    rows, cols = np.nonzero(brain)
    pad_r, pad_c = (np.ptp(rows) // 8, np.ptp(cols) // 8)
    window = np.s_[max(rows.min() - pad_r, 0):rows.max() + pad_r,
                   max(cols.min() - pad_c, 0):cols.max() + pad_c]
    rw, gw, bw = r[window], g[window], b[window]
    grey = (np.abs(rw - gw) < 12) & (np.abs(gw - bw) < 12) & (rw > 70)
    assert grey.sum() > 1000


def test_demo_without_display_says_how_to_run_headless(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    proc = run_demo(["--screenshot", str(tmp_path / "x.png")], env=env)
    assert proc.returncode == 1
    assert "xvfb-run" in proc.stderr
    assert not list(tmp_path.iterdir())
