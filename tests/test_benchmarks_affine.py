"""Correctness of the affine benchmark's ground truth and coordinate conversions.

The benchmark is only as honest as (a) its pairs really being related by ``t_true``
(fixed world RAS mm -> moving world RAS mm) and (b) each peer's LPS transform being read
back into that convention. (b) is checked here against SimpleITK, which implements the
ITK transform and image-geometry conventions that elastix and ANTs share.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import pairs  # noqa: E402
import peers  # noqa: E402
import report  # noqa: E402

OBLIQUE = np.array(
    [
        [-0.9, 0.1, 0.05, 40.0],
        [0.12, 1.1, -0.2, -12.0],
        [0.0, 0.15, 2.5, 7.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


@pytest.fixture(scope="module")
def small_pairs() -> list[pairs.Pair]:
    # 4 mm template: fast, and still a real brain.
    return pairs.make_pairs(1, seed=3, step=4)


def _sample_world(data: np.ndarray, affine: np.ndarray, pts: np.ndarray) -> np.ndarray:
    vox = (pts - affine[:3, 3]) @ np.linalg.inv(affine[:3, :3]).T
    return ndimage.map_coordinates(data, vox.T, order=1)


def test_pairs_follow_the_fixed_to_moving_convention(small_pairs: list[pairs.Pair]) -> None:
    mono = next(p for p in small_pairs if p.modality == "T1-T1")
    pts = mono.mask_points()
    y = pts @ mono.t_true[:3, :3].T + mono.t_true[:3, 3]
    at_truth = _sample_world(mono.moving, mono.moving_affine, y)
    at_identity = _sample_world(mono.moving, mono.moving_affine, pts)
    fixed = mono.fixed[mono.mask]
    # moving(T_true(x)) reproduces the fixed content (up to the 4 mm grid's aliasing),
    # better than the identity or a truth that is off by 4 mm along any axis.
    best = np.corrcoef(at_truth, fixed)[0, 1]
    assert best > 0.8
    assert best > np.corrcoef(at_identity, fixed)[0, 1] + 0.4
    for axis in range(3):
        off = y.copy()
        off[:, axis] += 4.0
        assert best > np.corrcoef(_sample_world(mono.moving, mono.moving_affine, off), fixed)[0, 1]


def test_multimodal_pair_is_inverted_contrast(small_pairs: list[pairs.Pair]) -> None:
    multi = next(p for p in small_pairs if p.modality == "T1-T2like")
    pts = multi.mask_points()
    y = pts @ multi.t_true[:3, :3].T + multi.t_true[:3, 3]
    values = _sample_world(multi.moving, multi.moving_affine, y)
    # WM is bright in T1 and dark in the T2-like image: strongly negative correlation.
    assert np.corrcoef(values, multi.fixed[multi.mask])[0, 1] < -0.8


def test_random_affine_stays_within_bounds() -> None:
    rng = np.random.default_rng(0)
    center = np.array([1.0, -17.0, 9.0])
    for _ in range(50):
        m = pairs.random_affine(rng, center)
        a = m[:3, :3]
        # Polar decomposition: rotation angle and stretch bounds.
        u, s, vt = np.linalg.svd(a)
        rot = u @ vt
        angle = np.degrees(np.arccos(np.clip((np.trace(rot) - 1) / 2, -1, 1)))
        assert angle <= pairs.MAX_ROTATION_DEG + 3.0  # shear adds a little rotation
        assert np.all(s > 0.85) and np.all(s < 1.15)
        moved_center = a @ center + m[:3, 3]
        assert np.linalg.norm(moved_center - center) <= pairs.MAX_TRANSLATION_MM + 1e-9


def test_tre_is_zero_at_truth_and_exact_for_a_shift(small_pairs: list[pairs.Pair]) -> None:
    p = small_pairs[0]
    assert pairs.tre(p, p.t_true)[0] == pytest.approx(0.0, abs=1e-9)
    shifted = p.t_true.copy()
    shifted[:3, 3] += [3.0, 0.0, 4.0]
    mean, worst = pairs.tre(p, shifted)
    assert mean == pytest.approx(5.0) and worst == pytest.approx(5.0)


def test_itk_geometry_matches_simpleitk_index_to_point() -> None:
    data = np.random.default_rng(1).random((6, 7, 8)).astype(np.float32)
    origin, spacing, direction = peers.itk_geometry(OBLIQUE)
    img = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    img.SetOrigin(origin.tolist())
    img.SetSpacing(spacing.tolist())
    img.SetDirection(direction.ravel().tolist())
    ijk = (2, 5, 3)
    lps = np.array(img.TransformIndexToPhysicalPoint(ijk))
    ras = OBLIQUE[:3, :3] @ np.array(ijk) + OBLIQUE[:3, 3]
    np.testing.assert_allclose(lps * [-1, -1, 1], ras, atol=1e-9)
    assert img[ijk] == pytest.approx(float(data[ijk]))


def test_itk_params_to_ras_matches_a_centred_itk_transform() -> None:
    rng = np.random.default_rng(2)
    a = np.eye(3) + rng.uniform(-0.1, 0.1, (3, 3))
    t = rng.uniform(-10, 10, 3)
    c = rng.uniform(-50, 50, 3)
    tx = sitk.AffineTransform(a.ravel().tolist(), t.tolist(), c.tolist())
    m_ras = peers.itk_params_to_ras(np.r_[a.ravel(), t], c)
    for p_ras in rng.uniform(-80, 80, (5, 3)):
        p_lps = p_ras * [-1, -1, 1]
        expected_ras = np.array(tx.TransformPoint(p_lps.tolist())) * [-1, -1, 1]
        np.testing.assert_allclose(m_ras[:3, :3] @ p_ras + m_ras[:3, 3], expected_ras, atol=1e-9)


def test_fit_affine_recovers_a_matrix() -> None:
    m = np.eye(4)
    m[:3, :] = np.random.default_rng(4).normal(size=(3, 4))
    pts = peers._probe_points(OBLIQUE, (5, 6, 7))
    mapped = pts @ m[:3, :3].T + m[:3, 3]
    np.testing.assert_allclose(peers.fit_affine(pts, mapped), m, atol=1e-9)


def test_report_ratios_are_per_pair() -> None:
    def rec(pair: str, tool: str, time_s: float, tre: float) -> dict:
        return {
            "pair": pair,
            "modality": "T1-T1",
            "tool": tool,
            "init_tre_mm": 9.0,
            "time_s": time_s,
            "tre_mm": tre,
            "tre_max_mm": tre * 2,
            "peak_rss_mib": 100.0,
            "delta_rss_mib": 50.0,
            "import_s": 0.1,
        }

    records = [
        rec("a", "elastix", 4.0, 0.1),
        rec("a", "ants", 40.0, 0.05),
        rec("a", "x", 2.0, 0.05),
        rec("b", "elastix", 8.0, 0.1),
        rec("b", "ants", 40.0, 0.10),
        rec("b", "x", 2.0, 0.05),
        {"pair": "a", "modality": "T1-T1", "tool": "y", "init_tre_mm": 9.0, "error": "boom"},
    ]
    rows = {r["tool"]: r for r in report.summarise(records)}
    assert rows["x"]["time_vs_ref"] == pytest.approx((0.5 + 0.25) / 2)
    assert rows["x"]["tre_vs_ref"] == pytest.approx((1.0 + 0.5) / 2)
    assert rows["y"]["n"] == 0 and rows["y"]["error"] == "boom"
    text = report.render_markdown(
        records,
        {
            "date": "d",
            "nproc": 2,
            "cpu": "c",
            "memory": "m",
            "loadavg_start": "0",
            "python": "3",
            "numpy": "2",
        },
        {"pairs": 2, "seed": 1, "tools": ["elastix", "ants", "x", "y"]},
    )
    assert "| T1-T1 | y | 0/1 | boom |" in text
