"""Live frames of only the planes on screen (widgets/_live_planes.py): in a 2D view a
frame is the three orthogonal planes through the current point, at the display grid's
full resolution, equal to the same planes of a whole warp; in 3D a coarse volume."""

from __future__ import annotations

import numpy as np
import pytest

from napari_reg.core.image import Volume
from napari_reg.core.transforms.base import MatrixTransform
from napari_reg.core.transforms.bspline import BSplineTransform
from napari_reg.display_grid import axis_aligned_grid
from napari_reg.widgets._grid_warp import LIVE_MAP_STEP, warp_to_grid
from napari_reg.widgets._live_planes import focus_index, plane_grids
from napari_reg.widgets.overlay import LiveOverlay, _redraw_pixels
from phantoms import homogeneous, phantom_volume, rotation
from test_widgets_overlay import _oblique_volume, _RecordingViewer


class _Dims:
    def __init__(self, point, ndisplay=2):
        self.point, self.ndisplay, self.ndim = tuple(point), ndisplay, len(point)


def _planes_of(volume: np.ndarray, index) -> list[np.ndarray]:
    return [np.take(volume, [i], axis=a) for a, i in enumerate(index)]


def test_focus_is_the_voxel_under_the_viewers_point_in_2d_only():
    affine = np.diag([2.0, -1.5, 3.0, 1.0])
    affine[:3, 3] = [10.0, 20.0, -5.0]
    shape = (20, 30, 10)
    viewer = type("V", (), {})()
    voxel = np.array([4, 7, 9])
    world = (affine @ np.r_[voxel, 1.0])[:3]
    viewer.dims = _Dims((0.0, *world))  # a 4D viewer (time first): our axes are the last 3
    assert focus_index(viewer, shape, affine) == tuple(voxel)
    viewer.dims = _Dims(world + [100.0, 0, 0])  # beyond the grid: clipped to its edge
    assert focus_index(viewer, shape, affine)[0] == shape[0] - 1
    viewer.dims = _Dims(world, ndisplay=3)  # 3D display: the whole volume is shown
    assert focus_index(viewer, shape, affine) is None


@pytest.mark.parametrize("kind", ["affine", "bspline"])
def test_plane_frames_equal_the_planes_of_a_whole_warp(kind):
    fixed = phantom_volume((26, 30, 22), (2.0, 1.5, 2.5), name="fixed")
    moving = phantom_volume((26, 30, 22), (2.0, 1.5, 2.5), name="moving")
    if kind == "affine":
        transform = MatrixTransform(homogeneous(rotation(0.1, -0.05, 0.2), [3.0, -2.0, 1.0]))
    else:
        transform = BSplineTransform.over_volume(fixed, 12.0)
        transform.parameters = np.random.default_rng(1).normal(0, 1.5, transform.n_parameters)
    index = (11, 17, 5)
    whole = warp_to_grid(moving, transform, fixed.shape, fixed.affine)
    grids = plane_grids(fixed.shape, fixed.affine, index)
    assert [axis for axis, _, _ in grids] == [0, 1, 2]
    for (_, shape, affine), expected in zip(grids, _planes_of(whole, index), strict=True):
        exact = warp_to_grid(moving, transform, shape, affine)
        np.testing.assert_allclose(exact, expected, atol=1e-5)
        preview = warp_to_grid(moving, transform, shape, affine, map_step=LIVE_MAP_STEP)
        # the live preview samples a smooth map on every 2nd in-plane voxel only
        tolerance = 1e-5 if kind == "affine" else 0.05 * np.ptp(expected)
        assert np.abs(preview - expected).mean() <= tolerance


def test_overlay_draws_the_planes_on_screen_and_a_coarse_volume_in_3d():
    fixed = _oblique_volume(shape=(34, 30, 26), seed=21)  # shown on an axis-aligned grid
    moving = _oblique_volume(shape=(34, 30, 26), seed=22)
    viewer = _RecordingViewer()
    shape, affine = axis_aligned_grid(fixed)
    focus = {"index": (10, 12, 8)}
    overlay = LiveOverlay(viewer, fixed, moving, max_voxels=3000,
                          focus=lambda grid: focus["index"])
    m = MatrixTransform(homogeneous(rotation(0.0, 0.1, 0.0), [1.0, 2.0, 0.0]))
    display = Volume(np.zeros(shape, np.float32), affine, "display")
    whole = warp_to_grid(moving, m, shape, affine)

    def frame():
        overlay.request(m)
        assert overlay.wait_frame(10)
        assert overlay.poll()
        return overlay.layer.data

    try:
        data = frame()
        assert data.shape == tuple(shape)  # full resolution, on the display grid
        np.testing.assert_allclose(overlay.layer.affine.affine_matrix, display.affine)
        for got, expected in zip(_planes_of(data, focus["index"]),
                                 _planes_of(whole, focus["index"]), strict=True):
            np.testing.assert_allclose(got, expected, atol=1e-5)
        untouched = np.ones(shape, bool)
        for a, i in enumerate(focus["index"]):
            np.moveaxis(untouched, a, 0)[i] = False
        assert not data[untouched].any()  # nothing else was computed
        focus["index"] = (20, 3, 15)  # the user moved: the next frame draws the new planes
        data = frame()
        assert overlay.layer.refreshes == 1  # same canvas array: a redraw, not a new layer.data
        for got, expected in zip(_planes_of(data, focus["index"]),
                                 _planes_of(whole, focus["index"]), strict=True):
            np.testing.assert_allclose(got, expected, atol=1e-5)
        focus["index"] = None  # 3D display: a coarse whole volume
        data = frame()
        assert data.shape == overlay.shape and np.prod(data.shape) <= 3000
        np.testing.assert_allclose(data, warp_to_grid(moving, m, overlay.shape,
                                                      overlay.grid_affine), atol=1e-5)
    finally:
        overlay.close()


def test_refocus_draws_the_last_state_where_the_view_moved():
    """Scrolling during a run: the current state is drawn on the new planes at once,
    without a new state from the optimiser."""
    fixed = phantom_volume((24, 26, 20), (2.0, 2.0, 2.0), name="fixed")
    moving = phantom_volume((24, 26, 20), (2.0, 2.0, 2.0), name="moving")
    viewer = _RecordingViewer()
    focus = {"index": (5, 6, 7)}
    overlay = LiveOverlay(viewer, fixed, moving, min_interval_s=0.0,
                          focus=lambda grid: focus["index"])
    m = MatrixTransform(homogeneous(rotation(0.05, 0.0, 0.1), [2.0, 0.0, -1.0]))
    whole = warp_to_grid(moving, m, fixed.shape, fixed.affine)
    try:
        overlay.refocus()  # nothing requested yet: nothing to draw
        assert not overlay.pending
        overlay.request(m)
        assert overlay.wait_frame(10)
        overlay.poll()
        focus["index"] = (17, 20, 2)
        overlay.refocus()
        assert overlay.wait_frame(10)
        assert overlay.poll() and overlay.n_updates == 2
        for got, expected in zip(_planes_of(overlay.layer.data, focus["index"]),
                                 _planes_of(whole, focus["index"]), strict=True):
            np.testing.assert_allclose(got, expected, atol=1e-5)
    finally:
        overlay.close()


def test_plane_frames_sample_a_smooth_map_every_4_mm():
    from napari_reg.widgets._frame_render import FrameRequest, render_frame
    from napari_reg.widgets._live_planes import plane_map_step

    assert plane_map_step(np.diag([1.0, 1.0, 1.0, 1.0])) == 4
    assert plane_map_step(np.diag([-2.0, 2.0, 3.0, 1.0])) == 2  # never below 2
    assert plane_map_step(np.diag([0.5, 0.8, 1.0, 1.0])) == 8
    fixed = phantom_volume((40, 44, 36), (1.0, 1.0, 1.0), name="fixed")
    moving = phantom_volume((40, 44, 36), (1.0, 1.0, 1.0), name="moving")
    ffd = BSplineTransform.over_volume(fixed, 10.0)
    ffd.parameters = np.random.default_rng(2).normal(0, 1.0, ffd.n_parameters)
    index = (20, 11, 30)
    frame = render_frame(moving, FrameRequest(ffd, fixed.shape, fixed.affine, index))
    for (axis, i, plane), (_, shape, affine) in zip(
            frame.planes, plane_grids(fixed.shape, fixed.affine, index), strict=True):
        exact = warp_to_grid(moving, ffd, shape, affine)
        assert i == index[axis] and plane.shape == exact.shape
        # inside the plane within 0.5 % of the range (1 mm voxels: every 4th evaluated);
        # at the grid's edges about as good as the every-2nd-voxel preview of before
        inner = tuple(slice(4, -4) if n > 1 else slice(None) for n in shape)
        assert np.abs(plane - exact)[inner].mean() <= 0.005 * np.ptp(exact)
        step2 = warp_to_grid(moving, ffd, shape, affine, map_step=2)
        assert np.abs(plane - exact).mean() <= 1.25 * np.abs(step2 - exact).mean() + 1e-6


def test_a_frame_redrawn_in_place_reaches_the_canvas_but_not_the_layer_list(
        make_napari_viewer):
    """The layer list repaints a layer's row (and the main window) on any event of the
    layer; a live frame changes only pixels, so only the canvas is told (napari
    viewer, screenshot of the canvas)."""
    viewer = make_napari_viewer(show=True)
    canvas = np.zeros((9, 40, 40), np.float32)
    layer = viewer.add_image(canvas, contrast_limits=(0.0, 1.0), colormap="gray")
    viewer.dims.set_point(0, 4)
    relayed = []
    viewer.layers.events.connect(lambda event: relayed.append(event.type))
    before = viewer.screenshot(canvas_only=True)
    canvas[4] = 1.0  # the plane on screen, written in place as the overlay does
    _redraw_pixels(layer)
    after = viewer.screenshot(canvas_only=True)
    assert after[..., :3].mean() > before[..., :3].mean() + 50  # the new values show
    assert "set_data" not in relayed
    canvas[4] = 0.0  # and the layer's other listeners still work after the block
    layer.refresh()
    assert "set_data" in relayed
