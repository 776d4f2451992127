"""The end of a run: the final event names the last stage's own levels, and the final
phase (whole-map field and full-resolution warp after the last level) honours Stop.

Cancellation is made deterministic without clocks: a token wrapper counts the cancel
checks made after the run's final event and cancels at a chosen one.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest

from napari_reg import EventKind, Volume, register
from napari_reg.core.optimize import Cancelled, CancelToken
from napari_reg.runs import RunController, RunStatus
from napari_reg.runs.tasks import register_and_warp
from phantoms import homogeneous, phantom_volume, rotation

SHAPE, SPACING = (30, 32, 28), (2.0, 2.0, 2.0)
FAST = {"levels": 2, "iterations": (6, 4), "samples": 2000}
DEFORMABLE = {
    "syn": {"levels": 2, "iterations": (4, 3)},
    # the edge judge could drop a deformation fitted in so few iterations: keep it
    "bspline": {"levels": 2, "iterations": (4, 3), "grid_spacing_mm": 16.0,
                "structure_check": False},
}


@pytest.fixture(scope="module")
def pair():
    fixed = phantom_volume(SHAPE, SPACING, name="fixed")
    moving = phantom_volume(SHAPE, SPACING, name="moving", transform=homogeneous(
        rotation(0.03, 0.0, -0.04), [2.0, 1.0, -1.5]))
    return fixed, moving


class CountingCancel:
    """A CancelToken's interface over a real token: once ``armed``, counts the checks
    and cancels the run at the ``cancel_at``-th one (None: never)."""

    def __init__(self, token: CancelToken, cancel_at: int | None = None):
        self.token, self.cancel_at = token, cancel_at
        self.armed, self.checks = False, 0

    @property
    def cancelled(self) -> bool:
        return self.token.cancelled

    def cancel(self) -> None:
        self.token.cancel()

    def raise_if_cancelled(self) -> None:
        if self.armed:
            self.checks += 1
            if self.cancel_at is not None and self.checks >= self.cancel_at:
                self.token.cancel()
        self.token.raise_if_cancelled()


def _target(fixed, moving, settings, counter_box, cancel_at, *, callback, cancel):
    """``register_and_warp`` whose cancel checks are counted after the final event."""
    counting = CountingCancel(cancel, cancel_at)
    counter_box.append(counting)

    def on_event(event):
        callback(event)
        if event.kind == EventKind.DONE:
            counting.armed = True  # the final phase starts after this event

    return register_and_warp(fixed, moving, settings, callback=on_event, cancel=counting)


@pytest.mark.parametrize("model", ["syn", "bspline"])
def test_final_event_names_the_last_stages_levels(pair, model):
    fixed, moving = pair
    events = []
    register(fixed, moving, transform=model, callback=events.append,
             deformable_options=DEFORMABLE[model], **{**FAST, "levels": 3,
                                                     "iterations": (6, 4, 2)})
    done = events[-1]
    assert done.kind == EventKind.DONE
    last_stage = [e for e in events[:-1] if e.stage_name == model]
    assert {e.n_levels for e in last_stage} == {2}  # the stage's own schedule, not the run's 3
    assert (done.stage, done.stage_name, done.n_levels, done.level) == (1, model, 2, 1)


def test_final_event_of_a_linear_run():
    fixed = phantom_volume((20, 22, 18), SPACING, name="fixed")
    events = []
    register(fixed, fixed, stages=("rigid", "affine"), callback=events.append, **FAST)
    done = events[-1]
    assert (done.stage, done.stage_name, done.level, done.n_levels) == (1, "affine", 1, 2)


@pytest.mark.parametrize("model", ["syn", "bspline"])
def test_whole_map_field_checks_cancel_in_chunks(pair, model):
    fixed, moving = pair
    result = register(fixed, moving, transform=model, deformable_options=DEFORMABLE[model],
                      **FAST)

    def fresh():  # the SVF caches its exponential: each call gets an unused copy
        return dataclasses.replace(result.deformable,
                                   deformation=result.deformable.deformation.copy())

    # a grid half a voxel off the fixed one: a SyN field is then interpolated onto it (on
    # the fixed grid itself it is only copied, with nothing to cancel in between)
    shifted = fixed.affine.copy()
    shifted[:3, 3] += 0.5 * np.diag(fixed.affine)[:3]
    reference = Volume(np.zeros(fixed.shape, np.float32), shifted, "reference")
    counting = CountingCancel(CancelToken())
    counting.armed = True
    field = fresh().displacement_field(reference, cancel=counting)
    n_checks = counting.checks
    assert n_checks >= 4  # several checks spread over the work, not one at the start
    np.testing.assert_array_equal(field.components,
                                  fresh().displacement_field(reference).components)
    for stop_at in (2, n_checks):  # Stop part-way and at the last check: no field
        counting = CountingCancel(CancelToken(), stop_at)
        counting.armed = True
        with pytest.raises(Cancelled):
            fresh().displacement_field(reference, cancel=counting)
        assert counting.checks == stop_at


@pytest.mark.parametrize("model", ["syn", "bspline"])
def test_stop_during_the_final_phase_keeps_the_previous_result(pair, model):
    fixed, moving = pair
    settings = {"transform": model, "deformable_options": DEFORMABLE[model], **FAST}
    controller = RunController()
    counters: list[CountingCancel] = []

    # a full run: the kept result, and how many checks its final phase made
    controller.start(functools.partial(_target, fixed, moving, settings, counters, None))
    kept = controller.wait(timeout=120)
    assert kept is not None and kept.status == RunStatus.DONE
    n_final_checks = counters[-1].checks
    assert n_final_checks >= 4  # field (exp/B-spline, compose) and warp slabs

    # the same run, stopped half-way through its final phase
    ends = []
    controller.finished.connect(ends.append)
    controller.start(functools.partial(_target, fixed, moving, settings, counters,
                                       n_final_checks // 2))
    controller.wait(timeout=120)
    assert ends[-1].status == RunStatus.STOPPED and ends[-1].result is None
    assert counters[-1].checks == n_final_checks // 2  # ended at that check, went no further
    assert controller.last is kept  # the previous valid result stands


def test_regrid_onto_the_same_grid_is_an_exact_copy():
    from napari_reg.core.stages.deformable_result import regrid

    rng = np.random.default_rng(4)
    comps = rng.normal(size=(3, 9, 8, 7)).astype(np.float32)
    affine = np.diag([1.5, -2.0, 2.5, 1.0])
    affine[:3, 3] = [4.0, -3.0, 2.0]
    same = regrid(comps, affine, (9, 8, 7), affine)
    np.testing.assert_array_equal(same, comps)
    assert same is not comps  # the caller may change it
    shifted = affine.copy()
    shifted[0, 3] += 0.75  # another grid: still interpolated
    other = regrid(comps, affine, (9, 8, 7), shifted)
    np.testing.assert_allclose(other[:, 3, 4, 2], 0.5 * (comps[:, 3, 4, 2] + comps[:, 4, 4, 2]),
                               rtol=1e-5)
