"""The real-anatomy benchmark's scorer reads maps in the fixed->moving direction.

Checked on a small synthetic "brain" (no data files): labels, Dice, NCC and the Jacobian
measures of benchmarks/real_pairs.py for the identity, a known shift between two grids,
the wrong direction and a fold.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import real_pairs as rp  # noqa: E402


def _brain(shape: tuple[int, int], center: tuple[float, float]) -> np.ndarray:
    """Dark rim (CSF), mid ring (GM), bright core (WM) on a black background."""
    r = np.sqrt(sum((np.indices(shape)[a] - center[a]) ** 2 for a in range(2)))
    img = np.where(r < 30, 60.0, 0.0) + np.where(r < 24, 60.0, 0.0) + np.where(r < 14, 80.0, 0.0)
    return ndimage.gaussian_filter(img, 0.7).astype(np.float32)


@pytest.fixture(scope="module")
def pair() -> rp.RealPair:
    # moving = the fixed content shifted by +5 voxels along i, on a grid whose origin is
    # 3 mm further along x: a fixed point x shows in the moving image at x + (5, 0) mm
    fixed = _brain((80, 80), (40.0, 40.0))
    moving = _brain((80, 80), (42.0, 40.0))
    fa = np.eye(3)
    ma = np.eye(3)
    ma[0, 2] = 3.0
    return rp.RealPair("synthetic", fixed, fa, moving, ma)


def test_labels_order_classes_by_intensity(pair: rp.RealPair) -> None:
    labels = pair.fixed_labels
    assert set(np.unique(labels)) == {0, 1, 2, 3}
    means = [pair.fixed[labels == c].mean() for c in (1, 2, 3)]
    assert means[0] < means[1] < means[2]
    assert not labels[0, 0] and labels[40, 40] == 3


def test_true_map_scores_perfectly_and_wrong_direction_does_not(pair: rp.RealPair) -> None:
    shift = np.zeros((2, 80, 80))
    shift[0] = 5.0
    good = rp.score(pair, shift)
    assert good["dice_mean"] == pytest.approx(1.0, abs=1e-6)
    assert good["ncc_brain"] > 0.999
    assert good["jac_min"] == pytest.approx(1.0) and good["folded_brain"] == 0.0
    wrong = rp.score(pair, -shift)
    ident = rp.score(pair, np.zeros_like(shift))
    assert wrong["dice_mean"] < ident["dice_mean"] < good["dice_mean"] - 0.05


def test_fold_and_unknown_points_are_counted(pair: rp.RealPair) -> None:
    u = np.zeros((2, 80, 80))
    u[0] = 5.0
    u[0, 30:50] -= 2.0 * (np.arange(30, 50) - 30)[:, None]  # d(x + u)/dx = -1 there: folds
    u[:, :2] = np.nan  # the read-back had no value here
    s = rp.score(pair, u)
    assert s["jac_min"] < 0 and s["folded_brain"] > 0.1
    assert s["unknown_brain"] == 0  # the NaN rows lie outside the brain
    assert np.isfinite(s["dice_mean"])
