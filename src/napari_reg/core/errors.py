"""The root of every error napari_reg raises for a problem with its input or settings.

Each module keeps its own error type (``VolumeError``, ``LandmarkError``,
``TransformFileError``, ``RegistrationError``, ...) so a message can say where the
problem is, and each of them is a :class:`NapariRegError`, so a script (or a panel)
that wants "anything napari_reg refused, with its one-line reason" catches one type.
It is a ``ValueError``: code that caught ``ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = ["NapariRegError"]


class NapariRegError(ValueError):
    """A refusal with the reason in words (bad file, bad setting, impossible request)."""
