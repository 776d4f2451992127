"""Transform models. Every transform maps fixed world RAS mm -> moving world RAS mm."""

from .base import CompositeTransform, MatrixTransform, ParametricTransform, Transform

__all__ = ["CompositeTransform", "MatrixTransform", "ParametricTransform", "Transform"]
from .linear import Affine, Rigid, Similarity, Translation  # noqa: E402

__all__ += ["Affine", "Rigid", "Similarity", "Translation"]
