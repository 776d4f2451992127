"""Metrics: analytic derivatives vs finite differences, known values, invariances, errors."""

from __future__ import annotations

import numpy as np
import pytest

from napari_reg.core.metrics import METRICS, MI, NMI, Metric, MetricError, make_metric

NAMES = ["ssd", "sad", "ncc", "mi", "nmi"]


def _numeric_gradient(metric: Metric, f, m, indices, h):
    out = []
    for i in indices:
        mp = m.copy()
        mm = m.copy()
        mp[i] += h
        mm[i] -= h
        out.append((metric.value(f, mp) - metric.value(f, mm)) / (2 * h))
    return np.array(out)


def _check_gradient(name, f, m, setup_f, setup_m, n_check=25, seed=0, **options):
    metric = make_metric(name, **options)
    metric.setup(setup_f, setup_m)
    cost, grad = metric.value_and_derivative(f, m)
    assert grad.shape == m.shape
    assert np.isclose(cost, metric.value(f, m), rtol=1e-12, atol=1e-15)
    rng = np.random.default_rng(seed)
    idx = rng.choice(m.size, size=min(n_check, m.size), replace=False)
    span = np.ptp(setup_m)
    num = _numeric_gradient(metric, f, m, idx, h=1e-5 * span)
    scale = np.abs(grad).max()
    np.testing.assert_allclose(grad[idx], num, rtol=1e-4, atol=1e-5 * scale)
    return grad


@pytest.mark.parametrize("name", NAMES)
def test_derivative_random_data(name):
    rng = np.random.default_rng(1)
    f = rng.normal(size=3000)
    m = 0.7 * f + 0.3 * f**2 + rng.normal(scale=0.4, size=f.size)
    # Setup on a wider range than the samples, so no sample is clipped (the clip's kink
    # would break the finite difference; clipped samples are tested separately).
    setup_m = np.concatenate([m, [m.min() - 1, m.max() + 1]])
    setup_f = np.concatenate([f, [f.min() - 1, f.max() + 1]])
    grad = _check_gradient(name, f, m, setup_f, setup_m, percentiles=(0, 100))
    assert np.any(grad != 0)


@pytest.mark.parametrize("name", ["mi", "nmi"])
@pytest.mark.parametrize("bins", [8, 32])
def test_histogram_derivative_where_parzen_window_matters(name, bins):
    # Few samples in few, narrow clusters: each sample's kernel dominates its bins, and
    # samples sit at all fractional positions inside bins (including near bin borders).
    rng = np.random.default_rng(2)
    f = rng.integers(0, 3, size=60).astype(float)
    m = f + rng.normal(scale=0.3, size=f.size)
    setup_m = np.array([-1.5, 3.5])
    setup_f = np.array([0.0, 2.0])
    grad = _check_gradient(
        name, f, m, setup_f, setup_m, n_check=60, bins=bins, percentiles=(0, 100)
    )
    assert np.count_nonzero(np.abs(grad) > 1e-3 * np.abs(grad).max()) > 30


@pytest.mark.parametrize("name", ["mi", "nmi"])
def test_histogram_derivative_at_bin_boundaries(name):
    # Moving samples exactly on integer bin coordinates and on the range ends.
    metric = make_metric(name, bins=16, percentiles=(0, 100))
    metric.setup(np.array([0.0, 1.0]), np.array([0.0, 12.0]))
    rng = np.random.default_rng(3)
    f = rng.random(40)
    m = rng.integers(1, 12, size=40).astype(float)  # width 1: integer t everywhere
    _, grad = metric.value_and_derivative(f, m)
    num = _numeric_gradient(metric, f, m, range(40), h=1e-6)
    np.testing.assert_allclose(grad, num, rtol=1e-4, atol=1e-6 * np.abs(grad).max())


@pytest.mark.parametrize("name", ["mi", "nmi", "ncc", "sad"])
def test_clipped_samples_have_zero_derivative(name):
    rng = np.random.default_rng(4)
    f = rng.normal(size=500)
    m = f + rng.normal(scale=0.2, size=500)
    metric = make_metric(name, percentiles=(0, 100))
    metric.setup(f, np.clip(m, -1, 1))
    _, grad = metric.value_and_derivative(f, m)
    if name in ("mi", "nmi"):
        assert np.all(grad[np.abs(m) > 1] == 0)
        assert np.any(grad[np.abs(m) < 1] != 0)
    else:  # the range only sets SAD's smoothing and NCC's guard: no clipping there
        assert np.all(grad[np.abs(m) > 1] != 0)


def test_identical_images_known_values():
    rng = np.random.default_rng(5)
    f = rng.normal(size=2000)
    for name, expected in [("ssd", 0.0), ("sad", 0.0), ("ncc", -1.0)]:
        metric = make_metric(name)
        metric.setup(f, f)
        cost, grad = metric.value_and_derivative(f, f)
        assert cost == pytest.approx(expected, abs=1e-9)
        np.testing.assert_allclose(grad, 0.0, atol=1e-9)


def test_ssd_and_sad_values():
    f = np.array([0.0, 1.0, 2.0, 3.0])
    m = np.array([1.0, 1.0, 0.0, 3.0])
    ssd = make_metric("ssd")
    assert ssd.value(f, m) == pytest.approx((1 + 0 + 4 + 0) / 4)
    sad = make_metric("sad", percentiles=(0, 100), epsilon=1e-6)
    sad.setup(f, m)
    assert sad.value(f, m) == pytest.approx((1 + 0 + 2 + 0) / 4, abs=1e-5)
    # Averaged: repeating the samples does not change the cost.
    assert ssd.value(np.tile(f, 5), np.tile(m, 5)) == pytest.approx(ssd.value(f, m))


def _entropy(labels):
    p = np.bincount(labels) / labels.size
    p = p[p > 0]
    return -float(np.sum(p * np.log(p)))


def test_mi_of_identical_discrete_image_is_its_entropy():
    # Levels far apart (more than the kernel's 4 bins): the Parzen window of each level
    # stays in its own bins, so MI(F, F) = H(F) exactly.
    rng = np.random.default_rng(6)
    labels = rng.choice(4, size=5000, p=[0.1, 0.2, 0.3, 0.4])
    f = labels.astype(float)
    metric = MI()
    metric.setup(f, f)
    assert metric.value(f, f) == pytest.approx(-_entropy(labels), rel=1e-10)
    # Shuffling destroys the relationship.
    assert metric.value(f, rng.permutation(f)) > -0.01


def test_nmi_range_and_ordering():
    rng = np.random.default_rng(7)
    f = rng.normal(size=5000)
    m = f + rng.normal(scale=0.1, size=f.size)
    metric = NMI()
    metric.setup(f, m)
    aligned = -metric.value(f, m)
    shuffled = -metric.value(f, rng.permutation(m))
    assert 1.0 <= shuffled < aligned <= 2.0
    assert shuffled == pytest.approx(1.0, abs=0.05)


def test_ncc_invariant_to_affine_intensity_maps():
    rng = np.random.default_rng(8)
    f = rng.normal(size=1000)
    m = np.sin(f) + rng.normal(scale=0.3, size=f.size)
    metric = make_metric("ncc")
    metric.setup(f, m)
    c0, g0 = metric.value_and_derivative(f, m)
    c1 = metric.value(f, 3.0 * m + 7.0)
    c2 = metric.value(-2.0 * f + 1.0, m)
    assert c1 == pytest.approx(c0, rel=1e-9)
    assert c2 == pytest.approx(-c0, rel=1e-9)  # a negative scale flips the correlation
    assert c0 == pytest.approx(-np.corrcoef(f, m)[0, 1], rel=1e-9)


@pytest.mark.parametrize("name", ["mi", "nmi"])
def test_histogram_metrics_invariant_to_monotone_remaps(name):
    rng = np.random.default_rng(9)
    labels = rng.choice(3, size=3000, p=[0.3, 0.3, 0.4])
    f = labels.astype(float)
    m = f.copy()
    metric = make_metric(name)
    metric.setup(f, m)
    ref = metric.value(f, m)
    # Monotone, strongly non-linear remaps that keep the levels in separate bins.
    f2 = np.exp(2.0 * f)
    m2 = np.sqrt(m)
    remapped = make_metric(name)
    remapped.setup(f2, m2)
    # MI is exactly invariant; NMI's H(M) includes the entropy of the discretised
    # kernel, which depends slightly on where each level falls inside its bin.
    assert remapped.value(f2, m2) == pytest.approx(ref, rel=1e-9 if name == "mi" else 1e-3)
    # A reversed (decreasing) map on the moving side: MI does not care about the sign.
    m3 = -m
    flipped = make_metric(name)
    flipped.setup(f, m3)
    assert flipped.value(f, m3) == pytest.approx(ref, rel=1e-9)


def test_mi_approximately_invariant_on_continuous_data():
    rng = np.random.default_rng(10)
    f = rng.normal(size=20000)
    m = f + rng.normal(scale=0.2, size=f.size)
    a, b = make_metric("mi"), make_metric("mi")
    a.setup(f, m)
    g = np.arctan(m)  # monotone, compresses the tails
    b.setup(f, g)
    assert b.value(f, g) == pytest.approx(a.value(f, m), rel=0.05)


def _signal(x):
    return np.exp(-((x - 10) ** 2) / 8) + 0.6 * np.exp(-((x - 22) ** 2) / 18) + 0.05 * x


@pytest.mark.parametrize(
    ("name", "contrast"),
    [(n, "same") for n in NAMES] + [("mi", "inverted"), ("nmi", "inverted")],
)
def test_cost_decreases_toward_alignment_1d(name, contrast):
    x = np.linspace(0, 32, 4000)
    f = _signal(x)
    moving = (lambda y: _signal(y)) if contrast == "same" else (lambda y: 2.0 - 1.5 * _signal(y))
    metric = make_metric(name)
    metric.setup(f, moving(x))
    shifts = np.array([3.0, 2.0, 1.0, 0.5, 0.0])
    costs = [metric.value(f, moving(x + s)) for s in shifts]
    assert np.all(np.diff(costs) < 0), costs
    costs_neg = [metric.value(f, moving(x - s)) for s in shifts]
    assert np.all(np.diff(costs_neg) < 0), costs_neg


@pytest.mark.parametrize("name", NAMES)
def test_constant_image_rejected_in_setup(name):
    metric = make_metric(name)
    with pytest.raises(MetricError, match="fixed image is constant"):
        metric.setup(np.full(100, 4.0), np.arange(100.0))
    with pytest.raises(MetricError, match="moving image is constant"):
        metric.setup(np.arange(100.0), np.zeros((10, 10)))
    with pytest.raises(MetricError, match="no finite"):
        metric.setup(np.full(10, np.nan), np.arange(10.0))


def test_mostly_background_image_uses_full_range():
    f = np.zeros(100000)
    f[:100] = np.linspace(1, 10, 100)  # 0.1 % foreground: both percentiles are 0
    metric = make_metric("mi")
    metric.setup(f, f)
    assert metric.fixed_range == (0.0, 10.0)


def test_sample_errors_and_degenerate_samples():
    metric = make_metric("ncc")
    with pytest.raises(MetricError, match="differ in number"):
        metric.value_and_derivative(np.zeros(5), np.zeros(4))
    with pytest.raises(MetricError, match="overlap"):
        metric.value_and_derivative(np.zeros(0), np.zeros(0))
    # Constant samples inside a non-constant image: finite cost, no division by zero.
    metric.setup(np.arange(10.0), np.arange(10.0))
    cost, grad = metric.value_and_derivative(np.arange(10.0), np.full(10, 3.0))
    assert cost == pytest.approx(0.0, abs=1e-9)
    assert np.all(np.isfinite(grad))
    for name in ("mi", "nmi"):
        hm = make_metric(name)
        hm.setup(np.arange(10.0), np.arange(10.0))
        c, g = hm.value_and_derivative(np.full(10, 2.0), np.full(10, 3.0))
        assert np.isfinite(c) and np.all(np.isfinite(g))


def test_make_metric_names_and_options():
    assert set(METRICS) == set(NAMES)
    for name in NAMES:
        assert make_metric(name.upper()).name == name
    assert make_metric(" MI ", bins=16).bins == 16
    with pytest.raises(ValueError, match="valid metrics are: ssd, sad, ncc, mi, nmi"):
        make_metric("cc")
    with pytest.raises(ValueError, match="invalid option for metric 'ssd'"):
        make_metric("ssd", bins=32)
    with pytest.raises(ValueError, match="bins"):
        make_metric("mi", bins=3)
    with pytest.raises(ValueError, match="epsilon"):
        make_metric("sad", epsilon=0)
    with pytest.raises(ValueError, match="percentiles"):
        make_metric("nmi", percentiles=(99, 1))


def test_lazy_setup_and_varying_sample_counts():
    rng = np.random.default_rng(11)
    f = rng.normal(size=30000)
    m = f + rng.normal(scale=0.3, size=f.size)
    lazy = make_metric("mi")
    c_lazy = lazy.value(f, m)  # first samples set the ranges
    explicit = make_metric("mi")
    explicit.setup(f, m)
    assert c_lazy == pytest.approx(explicit.value(f, m))
    # Reused scratch buffers must not leak between calls of different sizes.
    for n in (30000, 1000, 29000, 30000):
        c, g = explicit.value_and_derivative(f[:n], m[:n])
        fresh = make_metric("mi")
        fresh.setup(f, m)
        c2, g2 = fresh.value_and_derivative(f[:n], m[:n])
        assert c == c2
        np.testing.assert_array_equal(g, g2)


# ------------------------------------------------------------------ conditional MI
def _regional_pair(seed=0, n=30000):
    """Three-class samples at random 3D points; the moving intensity of each class is
    scaled by a smooth +-25 % bias along x (as a coil's sensitivity varies)."""
    rng = np.random.default_rng(seed)
    points = rng.uniform(-50.0, 50.0, (n, 3))
    labels = rng.integers(0, 3, n)
    f = np.array([40.0, 100.0, 160.0])[labels] + rng.normal(0, 2.0, n)
    bias = 1.0 + 0.25 * points[:, 0] / 50.0
    m = np.array([90.0, 30.0, 60.0])[labels] * bias + rng.normal(0, 2.0, n)
    return points, f, m


def test_conditional_mi_derivative_and_value():
    points, f, m = _regional_pair()
    metric = MI(bins=16, regions=2)
    metric.setup(f, m)
    metric.assign_regions(points)
    assert metric.n_regions == 8
    # equal-count slabs: along each axis half of the samples lie in either slab
    for axis, div in enumerate((4, 2, 1)):
        slab = (metric.regions // div) % 2
        assert abs(np.count_nonzero(slab) - f.size / 2) <= 1
        assert np.all(points[slab == 1, axis].min() >= points[slab == 0, axis].max())
    cost, grad = metric.value_and_derivative(f, m)
    idx = np.random.default_rng(1).choice(m.size, 25, replace=False)
    num = _numeric_gradient(metric, f, m, idx, h=1e-5 * np.ptp(m))
    np.testing.assert_allclose(grad[idx], num, rtol=1e-4, atol=1e-5 * np.abs(grad).max())
    # the value is I(F; M | R) = sum_r p(r) I(F; M | R = r): each region's own MI
    # (the same bins: the ranges are fixed by setup), weighted by its share of samples
    expected = 0.0
    for r in range(8):
        own = MI(bins=16)
        own.fixed_range, own.moving_range = metric.fixed_range, metric.moving_range
        inside = metric.regions == r
        expected += inside.mean() * -own.value(f[inside], m[inside])
    assert np.isclose(-cost, expected, rtol=1e-10)


def test_conditional_mi_sees_through_a_smooth_bias():
    points, f, m = _regional_pair()
    plain, regional = MI(bins=32), MI(bins=32, regions=3)
    for metric in (plain, regional):
        metric.setup(f, m)
    regional.assign_regions(points)
    # a +-25 % bias smears each class over many moving bins of one global histogram;
    # within a region the bias is nearly constant, so the classes stay sharp there
    unbiased = m / (1.0 + 0.25 * points[:, 0] / 50.0)
    lost_plain = plain.value(f, unbiased) - plain.value(f, m)
    lost_regional = regional.value(f, unbiased) - regional.value(f, m)
    assert lost_plain < -0.1  # the bias costs the global MI a lot
    assert abs(lost_regional) < 0.3 * abs(lost_plain)


def test_regions_option_is_checked():
    with pytest.raises(MetricError):
        MI(regions=0)
    # too few samples for 27 regional histograms: the plain MI
    points, f, m = _regional_pair(n=5000)
    metric = MI(regions=3)
    metric.assign_regions(points)
    assert metric.regions is None and metric.n_regions == 1
    metric = NMI(bins=16)
    metric.set_regions(np.array([0, 1, 0, 1]))
    with pytest.raises(MetricError, match="conditional"):
        metric.value(np.arange(4.0), np.arange(4.0))
