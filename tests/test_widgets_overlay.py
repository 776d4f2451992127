"""The live overlay's geometry: coarse grid, warp with the combined voxel matrix, layer."""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils.events import EmitterGroup
from scipy import ndimage

from napari_reg.core.image import Volume, apply_affine
from napari_reg.core.transforms.base import MatrixTransform
from napari_reg.display_grid import display_copy, is_axis_aligned
from napari_reg.widgets.overlay import LiveOverlay, coarse_grid, warp_to_grid, warp_volume


def _oblique_volume(shape=(30, 26, 22), spacing=(1.0, 1.2, 2.0), seed=0) -> Volume:
    rng = np.random.default_rng(seed)
    data = ndimage.gaussian_filter(rng.random(shape), 2).astype(np.float32)
    angle = np.deg2rad(20)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0],
                    [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag(spacing) @ np.diag([-1, 1, 1])  # flipped + oblique
    affine[:3, 3] = [10.0, -20.0, 5.0]
    return Volume(data, affine, "vol")


def _rotation_x(deg: float, center: np.ndarray) -> np.ndarray:
    a = np.deg2rad(deg)
    m = np.eye(4)
    m[1:3, 1:3] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    m[:3, 3] = center - m[:3, :3] @ center
    return m


def test_coarse_grid_spans_the_same_box_within_budget():
    ref = _oblique_volume(shape=(80, 70, 40))
    shape, affine = coarse_grid(ref, max_voxels=20_000)
    assert np.prod(shape) <= 20_000
    assert all(n >= 2 for n in shape)
    # first and last voxel centres coincide with the reference's
    last = np.asarray(shape) - 1.0
    np.testing.assert_allclose(apply_affine(affine, np.zeros(3)), ref.voxel_to_world(np.zeros(3)))
    np.testing.assert_allclose(apply_affine(affine, last),
                               ref.voxel_to_world(np.asarray(ref.shape) - 1.0), atol=1e-9)
    # finest axes (1.0, 1.2 mm) are coarsened first: the grid gets closer to isotropic
    coarse_spacing = np.linalg.norm(affine[:3, :3], axis=0)
    assert coarse_spacing.max() / coarse_spacing.min() < 2.0  # the reference has 2.0


def test_coarse_grid_is_the_grid_itself_when_small():
    ref = _oblique_volume(shape=(10, 12, 8))
    shape, affine = coarse_grid(ref, max_voxels=10**6)
    assert shape == ref.shape
    np.testing.assert_allclose(affine, ref.affine)


def test_warp_matches_pointwise_sampling_for_an_out_of_plane_rotation():
    """moving(T(x)) at each grid voxel centre, checked against an independent lookup."""
    fixed = _oblique_volume(seed=1)
    moving = _oblique_volume(shape=(34, 30, 24), spacing=(0.9, 1.1, 1.7), seed=2)
    t = _rotation_x(25.0, moving.center_world())  # out of the axial plane
    t[:3, 3] += [2.0, -1.5, 3.0]
    shape, grid = coarse_grid(fixed, max_voxels=4000)
    out = warp_to_grid(moving, MatrixTransform(t), shape, grid)
    assert out.shape == shape and out.dtype == np.float32
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    world_moving = apply_affine(t, apply_affine(grid, ijk))
    expected = ndimage.map_coordinates(moving.data, moving.world_to_voxel(world_moving).T,
                                       order=1, mode="constant", cval=0.0)
    np.testing.assert_allclose(out.reshape(-1), expected, atol=1e-5)
    assert np.count_nonzero(out) > out.size // 4  # the fields overlap: a real check


def test_identity_warp_of_the_fixed_image_is_the_fixed_image():
    fixed = _oblique_volume(seed=3)
    out = warp_to_grid(fixed, MatrixTransform(np.eye(4)), fixed.shape, fixed.affine)
    np.testing.assert_allclose(out, fixed.data, atol=1e-5)


class _FakeLayers(list):
    pass


class _RecordingViewer:
    """Just enough of a viewer for LiveOverlay: add_image + a layer list."""

    def __init__(self):
        self.layers = _FakeLayers()

    def add_image(self, data, name, affine, **kwargs):
        class _Layer:
            refreshes = 0  # redraws of an array the layer already holds (live planes)

            def __init__(self):
                self.events = EmitterGroup(source=self, set_data=None)

            def refresh(self, **flags):
                self.refreshes += 1
                self.events.set_data()

        layer = _Layer()
        layer.data, layer.name, layer.kwargs = data, name, kwargs

        class _Affine:
            affine_matrix = np.asarray(affine)

        layer.affine = _Affine()
        self.layers.append(layer)
        return layer


def test_live_overlay_shows_the_newest_request_then_full_resolution():
    fixed = _oblique_volume(shape=(40, 36, 30), seed=4)
    moving = _oblique_volume(shape=(40, 36, 30), seed=5)
    viewer = _RecordingViewer()
    overlay = LiveOverlay(viewer, fixed, moving, max_voxels=3000)
    try:
        for shift in (0.0, 1.0, 2.0):  # three requests before any warp is shown
            m = np.eye(4)
            m[0, 3] = shift
            overlay.request(MatrixTransform(m))
        while overlay.pending:  # the newest request follows the first
            overlay.wait_frame(5)
            overlay.poll()
        layer = overlay.layer
        assert layer.name == "warped (live)"
        assert layer.data.shape == overlay.shape and np.prod(layer.data.shape) <= 3000
        # the fixed grid is oblique: frames are drawn on an axis-aligned grid, which napari
        # slices right (it drops an oblique layer's out-of-plane rotation)
        assert is_axis_aligned(overlay.grid_affine)
        m = np.eye(4)
        m[0, 3] = 2.0
        expected = warp_to_grid(moving, MatrixTransform(m), overlay.shape, overlay.grid_affine)
        np.testing.assert_allclose(layer.data, expected)  # the newest, not an older one
        # the middle request was dropped, not queued (the warp thread takes the newest
        # request when it starts, so the first warp may already be the newest)
        assert overlay.n_updates <= 2
        final = warp_volume(moving, fixed, MatrixTransform(m))
        overlay.show_final(final)
        assert final.shape == fixed.shape  # the result itself stays on the fixed grid
        np.testing.assert_allclose(final.affine, fixed.affine)
        shown = display_copy(final)  # and is shown resliced onto the display grid
        layer_affine = getattr(layer.affine, "affine_matrix", layer.affine)  # napari or set
        assert shown.kind == "resliced" and is_axis_aligned(layer_affine)
        np.testing.assert_allclose(layer_affine, shown.affine)
        np.testing.assert_allclose(layer.data, shown.data)
    finally:
        overlay.close()


@pytest.mark.parametrize("order", [0, 1])
def test_warp_keeps_values_inside_the_moving_range(order):
    moving = _oblique_volume(seed=6)
    out = warp_to_grid(moving, MatrixTransform(np.eye(4)), (8, 8, 8), moving.affine @
                       np.diag([3.0, 3.0, 2.0, 1.0]), order=order)
    assert out.min() >= 0.0 and out.max() <= moving.data.max() + 1e-6


def test_nonlinear_transforms_warp_like_their_linear_equivalent():
    """A dense field that encodes a rotation warps like the matrix itself (other code path)."""
    from napari_reg.core.transforms.field import DisplacementField

    fixed = _oblique_volume(seed=7)
    moving = _oblique_volume(shape=(34, 30, 24), spacing=(0.9, 1.1, 1.7), seed=8)
    t = _rotation_x(15.0, moving.center_world())
    t[:3, 3] += [1.0, 2.0, -1.0]
    shape, grid = coarse_grid(fixed, max_voxels=3000)
    field = DisplacementField.from_transform(MatrixTransform(t), shape, grid)
    assert not field.is_linear
    via_field = warp_to_grid(moving, field, shape, grid)
    via_matrix = warp_to_grid(moving, MatrixTransform(t), shape, grid)
    inside = via_matrix > 0
    assert inside.mean() > 0.25
    np.testing.assert_allclose(via_field[inside], via_matrix[inside], atol=1e-3)


def test_live_preview_of_a_smooth_deformation_is_close_to_the_exact_warp():
    from napari_reg.core.transforms.field import DisplacementField

    fixed = _oblique_volume(shape=(40, 36, 30), seed=9)
    moving = _oblique_volume(shape=(40, 36, 30), seed=10)
    shape, grid = coarse_grid(fixed, max_voxels=30_000)
    # a smooth displacement (amplitude 2 mm, wavelength ~40 mm) on the coarse grid
    world = apply_affine(grid, np.stack(np.meshgrid(*[np.arange(n) for n in shape],
                                                    indexing="ij"), -1))
    u = 2.0 * np.sin(world[..., ::-1] / 40.0 * 2 * np.pi)
    field = DisplacementField(u, grid)
    exact = warp_to_grid(moving, field, shape, grid)
    preview = warp_to_grid(moving, field, shape, grid, map_step=2)
    assert preview.shape == exact.shape and preview.dtype == np.float32
    both = (exact > 0) & (preview > 0)
    assert both.mean() > 0.5
    err = np.abs(preview - exact)[both]
    assert err.mean() < 0.02 * np.ptp(moving.data)
    # the map was really evaluated: not the identity warp
    identity = warp_to_grid(moving, MatrixTransform(np.eye(4)), shape, grid)
    assert np.abs(identity - exact)[both].mean() > 5 * err.mean()


def test_exact_warp_in_slabs_equals_one_piece_and_honours_cancel():
    from napari_reg.core.optimize import Cancelled, CancelToken
    from napari_reg.core.transforms.field import DisplacementField

    fixed = _oblique_volume(shape=(20, 18, 12), seed=11)
    moving = _oblique_volume(shape=(20, 18, 12), seed=12)
    world = fixed.world_grid()
    # Stored on a grid other than the fixed one, so warp_volume takes the slab path.
    field = DisplacementField(1.5 * np.cos(world / 15.0), fixed.affine @ np.diag([1, 1, 1.01, 1]))
    whole = warp_to_grid(moving, field, fixed.shape, fixed.affine)
    slabs = warp_volume(moving, fixed, field, slab_voxels=3 * 18 * 12)  # 7 slabs
    np.testing.assert_allclose(slabs.data, whole, atol=1e-6)
    np.testing.assert_allclose(slabs.affine, fixed.affine)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        warp_volume(moving, fixed, field, cancel=token)


def test_paced_warps_take_the_newest_request_and_signal_when_ready():
    """A warp waits out the pacing interval, then draws the request that is newest by
    then; ``on_ready`` fires from the warp thread for every finished warp."""
    import threading

    fixed = _oblique_volume(shape=(30, 28, 24), seed=13)
    moving = _oblique_volume(shape=(30, 28, 24), seed=14)
    viewer = _RecordingViewer()
    ready_threads = []
    overlay = LiveOverlay(viewer, fixed, moving, max_voxels=3000, min_interval_s=0.3,
                          on_ready=lambda: ready_threads.append(threading.current_thread()))

    def shifted(mm):
        m = np.eye(4)
        m[1, 3] = mm
        return MatrixTransform(m)

    try:
        overlay.request(shifted(0.0))
        assert overlay.wait_frame(5)
        assert overlay.poll() and overlay.n_updates == 1
        overlay.request(shifted(1.0))  # queued: waits ~0.3 s before it starts
        overlay.request(shifted(3.0))  # arrives while it waits: this one is drawn
        assert overlay.wait_frame(5)
        assert overlay.poll() and overlay.n_updates == 2
        np.testing.assert_allclose(overlay.layer.data, warp_to_grid(
            moving, shifted(3.0), overlay.shape, overlay.grid_affine))
        assert not overlay.pending  # nothing newer waits: no extra warp
        assert len(ready_threads) == 2
        assert all(t is not threading.main_thread() for t in ready_threads)
    finally:
        overlay.close()


def test_a_previewed_transform_is_drawn_through_its_preview():
    """SyN events carry the exact map plus a cheap preview: the overlay draws the preview."""
    from napari_reg.core.preview import PreviewedTransform

    fixed = _oblique_volume(shape=(30, 28, 24), seed=15)
    moving = _oblique_volume(shape=(30, 28, 24), seed=16)
    viewer = _RecordingViewer()
    overlay = LiveOverlay(viewer, fixed, moving, max_voxels=3000)
    exact, preview = MatrixTransform(np.eye(4)), MatrixTransform(_rotation_x(10.0, (0, 0, 0)))
    try:
        overlay.request(PreviewedTransform(exact, preview))
        assert overlay.wait_frame(5)
        overlay.poll()
        np.testing.assert_allclose(overlay.layer.data, warp_to_grid(
            moving, preview, overlay.shape, overlay.grid_affine))
        via_exact = warp_to_grid(moving, exact, overlay.shape, overlay.grid_affine)
        assert np.abs(overlay.layer.data - via_exact).mean() > 0.05 * np.abs(via_exact).mean()
    finally:
        overlay.close()


@pytest.mark.parametrize("step", [2, 3])
def test_separable_upsampling_is_exact_for_linear_coordinates(step):
    """The live preview interpolates sampled coordinates; a linear map must come back
    exactly, whatever the grid size (odd, even, a sample past the end)."""
    from napari_reg.widgets._grid_warp import _upsample_axis

    shape = (7, 8, 5)
    counts = [int(np.ceil((n - 1) / step)) + 1 for n in shape]
    sampled = np.stack(np.meshgrid(*[np.arange(m, dtype=np.float32) * step for m in counts],
                                   indexing="ij"))
    values = 0.5 * sampled[0] - 2.0 * sampled[1] + 3.0 * sampled[2] + 1.0
    out = values[None]
    for axis, n in enumerate(shape):
        out = _upsample_axis(out, step, n, axis + 1)
    full = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape],
                                indexing="ij"))
    assert out.shape == (1,) + shape
    np.testing.assert_allclose(out[0], 0.5 * full[0] - 2.0 * full[1] + 3.0 * full[2] + 1.0,
                               atol=1e-5)
