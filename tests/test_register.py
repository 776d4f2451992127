"""The linear registration driver: recovery of known transforms, events, replay, errors."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from napari_reg import RegistrationError, register
from napari_reg.core.image import Volume
from napari_reg.core.optimize import Cancelled, CancelToken
from phantoms import (
    grid_affine,
    homogeneous,
    mean_error_mm,
    phantom_volume,
    rotation,
)

SHAPE, SPACING = (40, 44, 36), (2.0, 1.8, 2.2)
CENTRE = np.array([2.0, -3.0, 1.0])

TRUTHS = {
    "translation": homogeneous(np.eye(3), [4.0, -3.0, 2.5]),
    "rigid": homogeneous(rotation(0.08, -0.05, 0.12), [3.0, -2.0, 4.0], CENTRE),
    "similarity": homogeneous(1.06 * rotation(-0.06, 0.04, 0.1), [-2.0, 3.0, 1.0], CENTRE),
    "affine": homogeneous(
        rotation(0.07, 0.05, -0.09) @ np.array([[1.05, 0.03, 0.0], [0.0, 0.95, -0.02],
                                                 [0.02, 0.0, 1.03]]),
        [3.0, 2.0, -4.0], CENTRE),
}


@pytest.fixture(scope="module")
def fixed():
    # Oblique and anisotropic fixed grid: geometry must go through the affine.
    return phantom_volume(SHAPE, SPACING, rotation_matrix=rotation(0.1, 0.0, -0.15),
                          name="fixed")


def moved(kind: str, contrast: str = "t1") -> Volume:
    # The moving image lives on its own grid (other spacing, size and orientation).
    return phantom_volume((38, 40, 40), (2.1, 2.0, 1.9), origin=(1.0, 0.5, -1.0),
                          rotation_matrix=rotation(0.0, 0.12, 0.05),
                          transform=TRUTHS[kind], contrast=contrast, name="moving")


@pytest.mark.parametrize("kind", list(TRUTHS))
def test_recovers_each_transform_model(fixed, kind):
    result = register(fixed, moved(kind), transform=kind, metric="ssd", init="com")
    assert mean_error_mm(result.matrix, TRUTHS[kind], fixed) < 0.15


@pytest.mark.parametrize("metric", ["ssd", "sad", "ncc", "mi", "nmi"])
def test_recovers_affine_with_each_metric(fixed, metric):
    result = register(fixed, moved("affine"), transform="affine", metric=metric)
    assert mean_error_mm(result.matrix, TRUTHS["affine"], fixed) < 0.3


@pytest.mark.parametrize("metric", ["mi", "nmi"])
def test_multimodal_with_information_metrics(fixed, metric):
    # A small 2 mm phantom whose "T2" tissue intensities overlap: a fifth of a voxel.
    result = register(fixed, moved("rigid", contrast="t2"), transform="rigid", metric=metric)
    assert mean_error_mm(result.matrix, TRUTHS["rigid"], fixed) < 0.4


def test_real_sample_pair_with_defaults():
    """The shipped MNI pair: T1 vs a T2-like contrast on another (flipped, 2.2-2.6 mm)
    grid, moved by a known affine. Defaults: affine, MI, centres of mass."""
    from napari_reg._sample_data import load_mni_pair

    pair = load_mni_pair()
    result = register(pair.fixed, pair.moving)
    brain = pair.fixed.data > np.percentile(pair.fixed.data, 60)
    points = pair.fixed.voxel_to_world(np.argwhere(brain).astype(float))
    truth = pair.true_fixed_to_moving
    error = np.linalg.norm(points @ result.matrix[:3, :3].T + result.matrix[:3, 3]
                           - (points @ truth[:3, :3].T + truth[:3, 3]), axis=1)
    # 2-2.6 mm voxels, a bias field, noise and uint8 storage: within a quarter voxel
    # (the identity is ~12 mm off).
    assert error.mean() < 0.5
    assert error.max() < 1.2


def test_2d_affine_through_the_same_code():
    lin = np.array([[np.cos(0.1), -np.sin(0.1)], [np.sin(0.1), np.cos(0.1)]]) @ np.array(
        [[1.04, 0.02], [0.0, 0.97]])
    truth = homogeneous(lin, [3.0, -2.0], [1.0, 2.0])
    fixed2 = phantom_volume((80, 70), (1.0, 1.2), name="fixed2d")
    moving2 = phantom_volume((75, 75), (1.1, 1.0), origin=(1.0, -1.0), transform=truth)
    result = register(fixed2, moving2, transform="affine", metric="ncc")
    assert result.matrix.shape == (3, 3)
    assert mean_error_mm(result.matrix, truth, fixed2) < 0.15


def test_progress_events_and_record(fixed):
    events = []
    result = register(fixed, moved("rigid"), transform="rigid", metric="ncc",
                      callback=events.append, levels=2)
    iterations = [e for e in events if e.kind == "iteration"]
    assert iterations, "no iteration events"
    assert {e.level for e in iterations} == {0, 1}
    assert events[-1].kind == "done"
    # The events carry the whole current transform, and the costs the result keeps.
    assert np.allclose(events[-1].transform.matrix, result.matrix)
    assert [e.cost for e in iterations] == result.cost_history()
    assert all(b.elapsed >= a.elapsed for a, b in zip(events, events[1:], strict=False))
    assert result.timings["total_s"] > 0


def test_replay_from_parameters_gives_the_same_result(fixed):
    moving = moved("affine")
    first = register(fixed, moving, transform="affine", metric="mi", seed=3)
    import json

    parameters = json.loads(json.dumps(first.parameters))  # JSON-serialisable
    again = register(fixed, moving, **parameters)
    assert np.allclose(first.matrix, again.matrix, atol=1e-10)


def test_initial_matrix_and_landmarks_initialisation(fixed):
    truth = TRUTHS["rigid"]
    fixed_pts = np.array([[10, 0, 0], [0, 12, 0], [0, 0, 9], [-8, -6, 5], [5, -9, -7.0]])
    moving_pts = fixed_pts @ truth[:3, :3].T + truth[:3, 3]
    result = register(fixed, moved("rigid"), transform="rigid", init="landmarks",
                      landmarks=(fixed_pts, moving_pts), iterations=5)
    assert np.allclose(result.initial_transform.matrix, truth, atol=1e-6)
    assert mean_error_mm(result.matrix, truth, fixed) < 0.15
    started = register(fixed, moved("rigid"), transform="rigid", initial=truth, iterations=5)
    assert started.parameters["init"] == "initial"
    assert mean_error_mm(started.matrix, truth, fixed) < 0.15


def test_header_only_move_is_recovered():
    """nibabel's make_moved_anat.py recipe: same voxels, a rigidly moved affine."""
    import nibabel as nib
    from nibabel.eulerangles import euler2mat
    from nibabel.testing import data_path

    img = nib.load(f"{data_path}/anatomical.nii")
    data = np.asarray(img.dataobj, dtype=np.float32)
    extra = np.eye(4)
    extra[:3, :3] = euler2mat(0.1, 0.2, 0.3)
    extra[:3, 3] = [3, 4, 5]
    fixed_volume = Volume(data, img.affine)
    moving_volume = Volume(data, extra @ img.affine)
    # moving(T(x)) = fixed(x) with T = extra: a fixed point x is voxel A^-1 x, which
    # the moving image places at extra @ x.
    result = register(fixed_volume, moving_volume, transform="rigid", metric="ncc",
                      init="geometry", samples=(4000, 8000, 30000))
    assert mean_error_mm(result.matrix, extra, fixed_volume) < 0.1


def test_cancel_stops_within_a_second(fixed):
    token = CancelToken()
    started = threading.Event()
    outcome: dict = {}

    def on_event(event):
        started.set()
        time.sleep(0.01)

    def run():
        try:
            register(fixed, moved("affine"), callback=on_event, cancel=token,
                     iterations=10000, samples=20000)
            outcome["result"] = "finished"
        except Cancelled:
            outcome["result"] = "cancelled"

    thread = threading.Thread(target=run)
    thread.start()
    assert started.wait(20)
    t0 = time.perf_counter()
    token.cancel()
    thread.join(5)
    assert not thread.is_alive()
    assert outcome["result"] == "cancelled"
    assert time.perf_counter() - t0 < 1.0


# ---------------------------------------------------------------------- bad input
def test_no_overlap_is_a_clear_error(fixed):
    far = phantom_volume((20, 20, 20), (2.0, 2.0, 2.0), origin=(500.0, 0, 0),
                         transform=homogeneous(np.eye(3), [500.0, 0, 0]))
    with pytest.raises(RegistrationError, match="overlap"):
        register(fixed, far, init="none")


def test_constant_image_is_refused(fixed):
    flat = Volume(np.full((20, 20, 20), 7.0, np.float32), np.eye(4))
    with pytest.raises(RegistrationError, match="constant"):
        register(fixed, flat)


def test_nan_voxels_do_not_poison_the_result(fixed):
    moving = moved("rigid")
    data = moving.data.copy()
    data[:3] = np.nan
    result = register(fixed, moving.with_data(data), transform="rigid", metric="ncc")
    assert np.all(np.isfinite(result.matrix))
    assert mean_error_mm(result.matrix, TRUTHS["rigid"], fixed) < 0.3


def test_dimension_mismatch_and_bad_options(fixed):
    flat2d = Volume(np.random.default_rng(0).random((20, 20)), np.eye(3))
    with pytest.raises(RegistrationError, match="2D"):
        register(fixed, flat2d)
    with pytest.raises(RegistrationError, match="unknown metric"):
        register(fixed, moved("rigid"), metric="bogus")
    with pytest.raises(RegistrationError, match="unknown transform"):
        register(fixed, moved("rigid"), transform="bogus")
    with pytest.raises(ValueError, match="landmark"):
        register(fixed, moved("rigid"), init="landmarks")
    with pytest.raises(ValueError):
        register(fixed, moved("rigid"), init="landmarks",
                 landmarks=(np.zeros((4, 3)), np.zeros((3, 3))))


def test_fixed_mask_on_another_grid_is_used(fixed):
    mask_affine = grid_affine((30, 30, 30), (2.5, 2.5, 2.5))
    mask = Volume(np.zeros((30, 30, 30), np.uint8), mask_affine)
    mask.data[5:25, 5:25, 5:25] = 1
    result = register(fixed, moved("rigid"), transform="rigid", metric="ncc", fixed_mask=mask)
    assert mean_error_mm(result.matrix, TRUTHS["rigid"], fixed) < 0.3
    empty = Volume(np.zeros((30, 30, 30), np.uint8), mask_affine)
    with pytest.raises(RegistrationError, match="mask is empty"):
        register(fixed, moved("rigid"), fixed_mask=empty)
