"""The live view during a run, driven as a user in a real viewer: in a 2D view the
"warped (live)" layer shows the plane on screen at full resolution (the three planes
through the cursor with the ortho views), follows the user to another slice at once (not
at the optimiser's next state), and switches to a coarse whole volume in 3D. Screenshots:
/tmp/napari_reg_gui_live_scrolled.png, /tmp/napari_reg_gui_live_ortho.png."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt

import test_widgets_register as register_tests
from napari_reg.widgets._session import get_session
from napari_reg.widgets.register_widget import LIVE_LAYER_NAME
from napari_reg.widgets.view_mode import ViewModeControl

_panels = register_tests._panels
pair_files, reg_plugin = register_tests.pair_files, register_tests.reg_plugin
notes, slow_core = register_tests.notes, register_tests.slow_core


def _live(viewer):
    return next((lyr for lyr in viewer.layers if lyr.name == LIVE_LAYER_NAME), None)


def test_live_planes_follow_the_view(make_napari_viewer, qtbot, pair_files, reg_plugin,
                                     notes, slow_core):
    viewer = make_napari_viewer()
    viewer.window._qt_window.resize(1280, 800)
    _, reg, _ = _panels(viewer, pair_files, qtbot)
    fixed_layer = get_session(viewer).fixed_layer
    viewer.dims.order = (2, 1, 0)  # axial slices: axis 2 is the slicing axis
    reg.iterations.value = "4000, 2000"  # minutes with the slowed core: Stop ends it
    slow_core.delay = 0.2  # a new optimiser state only every 0.2 s
    reg.live_max_voxels = 20_000  # the 3D fallback's coarse grid (this image: 78 k voxels)
    qtbot.mouseClick(reg.run_button.native, Qt.LeftButton)
    qtbot.waitUntil(lambda: _live(viewer) is not None, timeout=30_000)
    layer = _live(viewer)
    assert layer.data.shape == fixed_layer.data.shape  # full resolution, the display grid
    # the voxel napari itself shows at the viewer's point
    i, j, k = (int(round(v)) for v in layer.world_to_data(viewer.dims.point))
    # a single 2D view shows one plane: only that one is computed
    assert reg.live_view._focus(reg.live_view.overlay.display_reference) == (None, None, k)
    assert np.any(layer.data[:, :, k])  # the plane on screen is drawn ...
    other = k - 4
    assert not np.any(layer.data[:, :, other])  # ... and nothing else
    assert not np.any(np.delete(layer.data[i], k, axis=1))

    # the user scrolls: the new slice is drawn from the current state, before the next one
    slow_core.delay = 60.0  # the optimiser now sends no new state for a minute
    qtbot.wait(300)  # (the iteration under way when the delay changed ends first)
    updates = reg.live_view.overlay.n_updates
    viewer.dims.set_point(2, layer.data_to_world([i, j, other])[2])
    qtbot.waitUntil(lambda: np.any(layer.data[:, :, other]), timeout=10_000)
    assert reg.live_view.overlay.n_updates == updates + 1
    viewer.screenshot(path="/tmp/napari_reg_gui_live_scrolled.png", canvas_only=False)

    # ortho views show the coronal and sagittal planes too: all three are drawn
    modes = ViewModeControl(viewer)
    modes.set_mode("ortho")
    viewer.dims.set_point(2, layer.data_to_world([i, j, k])[2])  # (a move draws at once)
    def beside_the_axial_planes(plane):  # an i- or j-plane less its lines at k and other
        return np.delete(plane, [k, other], axis=-1)

    qtbot.waitUntil(lambda: np.any(beside_the_axial_planes(layer.data[i]))
                    and np.any(beside_the_axial_planes(layer.data[:, j])), timeout=10_000)
    assert reg.live_view._focus(reg.live_view.overlay.display_reference) == (i, j, k)
    viewer.screenshot(path="/tmp/napari_reg_gui_live_ortho.png", canvas_only=False)
    modes.set_mode("single")
    assert not get_session(viewer).ortho_views

    # 3D: a coarse whole volume instead of planes
    viewer.dims.ndisplay = 3
    qtbot.waitUntil(lambda: _live(viewer).data.shape != fixed_layer.data.shape,
                    timeout=10_000)
    assert np.prod(_live(viewer).data.shape) <= reg.live_max_voxels
    viewer.dims.ndisplay = 2
    qtbot.mouseClick(reg.stop_button.native, Qt.LeftButton)
    qtbot.waitUntil(lambda: not reg.running, timeout=65_000)
    assert not notes["error"], notes["error"]
