"""SyN's thread pool: work already running on the pool never waits for more pool tasks.
The two half maps run on the pool and their exponentials interpolate large fields on it
too; with both workers busy those inner tasks never started (a hang on grids of 1.6 M
voxels and up, e.g. full-resolution iterations on a 1.2 mm brain)."""

import threading

import numpy as np
from scipy import ndimage

from napari_reg.core.stages.syn_ops import half_maps, parallel_map
from napari_reg.core.transforms.field import _PARALLEL_POINTS, in_pool
from napari_reg.core.transforms.velocity import exp_voxel


def _run_guarded(fn, seconds=600.0):
    """Run ``fn`` on a daemon thread; a deadlock shows as a thread that never ends."""
    out: dict = {}
    worker = threading.Thread(target=lambda: out.setdefault("value", fn()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), "deadlocked: a pool task waited for the pool"
    return out["value"]


def test_half_maps_on_a_grid_whose_exponentials_use_the_pool():
    shape = (120, 120, 120)  # every 2nd voxel: 60^3 = 216 k points, above the pool's bound
    assert (60 ** 3) >= _PARALLEL_POINTS
    rng = np.random.default_rng(0)
    v = np.stack([ndimage.gaussian_filter(rng.normal(size=shape), 8.0) for _ in range(3)])
    v = (v * (2.0 / np.abs(v).max())).astype(np.float32)  # up to 2 voxels
    half, half_inv = _run_guarded(lambda: half_maps(v, 2, lambda: None))
    # the pool-free reference: the same coarse exponential, serially, on sampled voxels
    coarse = v[:, ::2, ::2, ::2] * np.float32(0.25)
    reference = exp_voxel(coarse, max_step_voxels=0.5) * 2
    np.testing.assert_allclose(half[:, ::2, ::2, ::2][:, :-1, :-1, :-1],
                               reference[:, :-1, :-1, :-1], atol=1e-4)
    assert np.abs(half + half_inv).max() < 0.2  # exp(-v/2) ~ -exp(v/2) for a smooth v


def test_parallel_map_runs_serially_inside_the_pool():
    seen = []

    def inner(x):
        seen.append(in_pool())
        return parallel_map(lambda y: y + 1, [x, x], 10 ** 7)

    assert not in_pool()
    assert _run_guarded(lambda: parallel_map(inner, [1, 2], 10 ** 7)) == [[2, 2], [3, 3]]
    assert seen == [True, True]
