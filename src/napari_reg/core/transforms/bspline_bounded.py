"""An FFD whose control-point displacements can never leave their injectivity bound.

The optimiser moves unconstrained parameters ``q``; the coefficients are

    phi = b tanh(q / b)        (|phi| < b for every q; phi ~ q while |q| << b)

with ``b`` the Choi & Lee bound of :func:`~.bspline_chain.injectivity_bound`: a smooth
change of variables instead of a clipped step, so L-BFGS sees a smooth objective and
the FFD can never fold, however hard the similarity pulls.
"""

from __future__ import annotations

import numpy as np

from .base import ParametricTransform, PointJacobian
from .bspline import BSplineTransform
from .bspline_chain import injectivity_bound

__all__ = ["BoundedBSpline"]


class BoundedBSpline(ParametricTransform):
    """``x -> x + u(x)`` of ``ffd`` with ``phi = b tanh(q / b)`` (``q``: the parameters)."""

    def __init__(self, ffd: BSplineTransform, safety: float = 0.95):
        self.ffd = ffd
        self.ndim = ffd.ndim
        self.bound = injectivity_bound(ffd, safety).ravel()
        self._q = np.zeros(self.bound.size)
        self.ffd.parameters = np.zeros(self.bound.size)

    @property
    def parameters(self) -> np.ndarray:
        return self._q.copy()

    @parameters.setter
    def parameters(self, value: np.ndarray) -> None:
        q = np.asarray(value, dtype=np.float64).ravel()
        if q.size != self.bound.size:
            raise ValueError(f"expected {self.bound.size} parameters, got {q.size}")
        self._q = q.copy()
        self._t = np.tanh(q / self.bound)
        self.ffd.parameters = self.bound * self._t

    @property
    def n_parameters(self) -> int:
        return int(self.bound.size)

    def dphi_dq(self) -> np.ndarray:
        t = np.tanh(self._q / self.bound)
        return 1.0 - t * t

    def transform_points(self, points: np.ndarray) -> np.ndarray:
        return self.ffd.transform_points(points)

    def jacobian(self, points: np.ndarray) -> np.ndarray:
        return self.ffd.jacobian(points) * self.dphi_dq()[None, None, :]

    def parameter_scales(self) -> np.ndarray:
        return np.ones(self.n_parameters)

    def at_points(self, points: np.ndarray, then: np.ndarray | None = None) -> PointJacobian:
        """The sparse form (weights computed once); the last one is kept as ``mapping``
        so that :meth:`moved_points` reuses its weights."""
        self.mapping = _BoundedPointJacobian(self, points, then)
        return self.mapping

    def moved_points(self) -> np.ndarray:
        """``x + u(x)`` (world mm, before ``then``) at the points of the last
        :meth:`at_points`, with its precomputed weights."""
        mapping = self.mapping
        return mapping.points + self.ffd.displacement_at(mapping.points, mapping.inner.weights)

    def bending_energy_and_gradient(self) -> tuple[float, np.ndarray]:
        """The FFD's bending energy (mm^-2) and its gradient w.r.t. ``q``."""
        energy, gradient = self.ffd.bending_energy_and_gradient()
        return energy, gradient * self.dphi_dq()

    def usage(self) -> float:
        """Largest ``|phi| / b`` (0: no displacement, -> 1: the bound is saturated)."""
        return float(np.max(np.abs(np.tanh(self._q / self.bound)))) if self._q.size else 0.0


class _BoundedPointJacobian(PointJacobian):
    """The FFD's sparse form, its pull-back times ``dphi/dq``."""

    def __init__(self, transform: BoundedBSpline, points: np.ndarray,
                 then: np.ndarray | None = None):
        super().__init__(transform, points, then)
        self.inner = transform.ffd.at_points(points, then)

    def mapped(self) -> np.ndarray:
        return self.inner.mapped()

    def pull_back(self, forces: np.ndarray) -> np.ndarray:
        return self.inner.pull_back(forces) * self.transform.dphi_dq()
