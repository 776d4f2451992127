"""The one error hierarchy of the registration engine.

Every problem a registration can meet (bad images, a bad setting, images that do not
overlap, a metric that cannot be evaluated) is a :class:`RegistrationError` whose message
is one line naming the problem, so the GUI and the command line catch one type. It is a
``ValueError``: callers that caught ``ValueError`` keep working.
"""

from __future__ import annotations

from ..errors import NapariRegError

__all__ = ["RegistrationError", "OverlapError", "DeformableError"]


class RegistrationError(NapariRegError):
    """A registration that cannot run or cannot go on, with the reason in words."""


class OverlapError(RegistrationError):
    """Too few fixed sample points map inside the moving image: the images do not overlap
    under the current transform (a bad initialisation or wrong world positions)."""


# The deformable stages' old error name (core/deformable.py); the same type now.
DeformableError = RegistrationError
