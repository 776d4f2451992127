"""Turning a button's failure into a napari notification (nothing is lost, no crash)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from napari.utils.notifications import show_error

__all__ = ["guarded"]


def guarded(action: Callable[[], Any]) -> Callable[..., Any]:
    """A slot that runs ``action``; a ValueError or OSError becomes an error notification.

    Those are the errors bad input raises (the core and io say what is wrong in words);
    anything else is a bug and propagates to napari's own handler.
    """

    def run(*_args: Any) -> Any:
        try:
            return action()
        except (ValueError, OSError) as exc:
            show_error(str(exc))
            return None

    return run
