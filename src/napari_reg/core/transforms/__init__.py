"""Transform models. Every transform maps fixed world RAS mm -> moving world RAS mm."""

from .base import CompositeTransform, MatrixTransform, ParametricTransform, Transform

__all__ = ["CompositeTransform", "MatrixTransform", "ParametricTransform", "Transform"]
