"""The engine's shared parts (core/engine): one chain rule for every parametric transform,
one per-level rule, one error hierarchy, one reporter with event kinds, and the Stage
contract a new stage plugs into."""

from __future__ import annotations

import numpy as np
import pytest

from napari_reg import EventKind, RegistrationError, register
from napari_reg.core.engine.context import LevelSchedule, RunContext, per_level
from napari_reg.core.engine.errors import DeformableError, OverlapError
from napari_reg.core.engine.events import Reporter
from napari_reg.core.engine.result import StageResult
from napari_reg.core.engine.stage import Stage
from napari_reg.core.metrics import MetricError, make_metric
from napari_reg.core.optimize import Cancelled, CancelToken
from napari_reg.core.stages.standalone import run_alone
from napari_reg.core.transforms.base import MatrixTransform, PointJacobian
from napari_reg.core.transforms.bspline import BSplineTransform
from napari_reg.core.transforms.linear import Affine, Rigid, Similarity
from phantoms import homogeneous, phantom_volume, rotation

THEN = homogeneous(rotation(0.05, -0.1, 0.2) @ np.diag([1.1, 0.9, 1.05]), [3.0, -1.0, 2.0])


@pytest.fixture(scope="module")
def fixed():
    return phantom_volume((24, 26, 22), (2.0, 2.0, 2.0), name="fixed")


@pytest.fixture(scope="module")
def moving():
    return phantom_volume((24, 26, 22), (2.0, 2.0, 2.0),
                          transform=homogeneous(rotation(0.04, 0.0, -0.05), [2.0, 1.0, -1.5]),
                          name="moving")


def _models(volume):
    rng = np.random.default_rng(0)
    rigid = Rigid(center=np.array([1.0, -2.0, 0.5]), parameters=rng.normal(0, 0.1, 6))
    similarity = Similarity(center=np.array([0.0, 1.0, 2.0]),
                            parameters=rng.normal(0, 0.1, 7))
    affine = Affine(center=np.array([-1.0, 0.0, 1.0]))
    affine.parameters = affine.parameters + rng.normal(0, 0.05, 12)
    ffd = BSplineTransform.over_volume(volume, 16.0)
    ffd.parameters = rng.normal(0, 0.8, ffd.n_parameters)
    return [rigid, similarity, affine, ffd]


@pytest.mark.parametrize("then", [None, THEN], ids=["alone", "then-linear"])
def test_fast_chain_rules_equal_the_generic_jacobian_form(fixed, then):
    """Every model's at_points() (linear: d+1 Jacobians; B-spline: sparse weights) maps
    the points and pulls forces back exactly as the generic transform.jacobian form."""
    rng = np.random.default_rng(1)
    points = fixed.world_grid().reshape(-1, 3)[rng.choice(fixed.data.size, 300, False)]
    forces = rng.normal(size=(300, 3))
    for model in _models(fixed):
        fast = model.at_points(points, then)
        generic = PointJacobian(model, points, then)
        assert type(fast) is not PointJacobian  # each model brings its own form
        np.testing.assert_allclose(fast.mapped(), generic.mapped(), atol=1e-9)
        np.testing.assert_allclose(fast.pull_back(forces), generic.pull_back(forces),
                                   rtol=1e-9, atol=1e-9)


def test_one_per_level_rule():
    assert per_level(5, 3, "iterations") == [5, 5, 5]
    assert per_level([1, 2, 3], 3, "iterations") == [1, 2, 3]
    assert per_level([9, 1, 2, 3], 3, "iterations") == [1, 2, 3]  # the fine end
    assert per_level([2, 3], 4, "iterations") == [2, 2, 2, 3]  # coarse levels repeat
    with pytest.raises(RegistrationError, match="none"):
        per_level([], 3, "samples")
    with pytest.raises(RegistrationError, match=">= 0"):
        per_level([3, -1], 2, "samples")


def test_one_error_hierarchy(fixed, moving):
    for kind in (OverlapError, MetricError, DeformableError):
        assert issubclass(kind, RegistrationError) and issubclass(kind, ValueError)
    with pytest.raises(MetricError):
        make_metric("nope")
    far = np.eye(4)
    far[:3, 3] = 500.0
    with pytest.raises(OverlapError, match="overlap"):
        register(fixed, moving, initial=far, levels=1, iterations=2)
    with pytest.raises(RegistrationError, match="deformable_options for syn"):
        register(fixed, moving, transform="syn", deformable_options={"grid_spacing_mm": 5})


def test_one_reporter_with_event_kinds(fixed, moving):
    events = []
    result = register(fixed, moving, stages=("rigid", "affine"), levels=2,
                      iterations=(4, 3), samples=2000, callback=events.append)
    kinds = [e.kind for e in events]
    assert all(isinstance(k, EventKind) for k in kinds)
    assert kinds[0] == EventKind.INITIALISED == "initialised" and kinds[-1] == "done"
    iterations = [e for e in events if e.kind == EventKind.ITERATION]
    assert [e.total_iterations for e in iterations] == list(range(1, len(iterations) + 1))
    assert len(iterations) == len(result.cost_history())
    assert {e.stage_name for e in iterations} == {"rigid", "affine"}
    assert [e.stage for e in events if e.kind == "level_start"] == [0, 0, 1, 1]


class _ScaleFirstStage(Stage):
    """A toy stage: scales the start transform once and reports one iteration."""

    name = "scale"

    def run(self, fixed, moving, transform, ctx: RunContext) -> StageResult:
        record = ctx.record(self.name, 0, _one_level(), n_samples=0)
        ctx.report(EventKind.LEVEL_START, record, 1, 0, 1, float("nan"), transform)
        ctx.cancel.raise_if_cancelled()
        scaled = MatrixTransform(transform.matrix @ np.diag([2.0, 2.0, 2.0, 1.0]))
        record.costs.append(0.0)
        ctx.report(EventKind.ITERATION, record, 1, 0, 1, 0.0, scaled)
        ctx.report(EventKind.LEVEL_END, record, 1, 1, 1, 0.0, scaled)
        return StageResult(transform=scaled, levels=[record], final_cost=0.0, n_iterations=1)


def _one_level():
    return LevelSchedule([[1, 1, 1]], [0.0])


def test_a_new_stage_plugs_into_the_run_context(fixed, moving):
    """The Stage contract other work builds on: run(fixed, moving, transform, ctx) ->
    StageResult, events through ctx.report with the stage index the driver set."""
    events = []
    start = homogeneous(np.eye(3), [1.0, 2.0, 3.0])
    result = run_alone(_ScaleFirstStage(), fixed, moving, start, callback=events.append,
                       stage_index=3)
    np.testing.assert_allclose(result.transform.matrix[:3, :3], 2 * np.eye(3))
    assert [e.kind for e in events] == ["level_start", "iteration", "level_end"]
    assert {e.stage for e in events} == {3} and events[1].total_iterations == 1
    token = CancelToken()
    token.cancel()
    ctx = RunContext(Reporter(None), token)
    with pytest.raises(Cancelled):
        _ScaleFirstStage().run(fixed, moving, MatrixTransform(start), ctx)
