"""Per-viewer registration state shared by the load, register and export widgets.

napari creates each dock widget on its own, so the widgets meet through one
:class:`RegistrationSession` per viewer (held weakly: closing the viewer frees it).
The session holds *which* layers play which role and the last result; it does no
maths and never touches a layer's data.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from psygnal import Signal

from ..core.engine.result import RegistrationResult
from ..core.image import Volume

__all__ = ["RegistrationSession", "RunOutcome", "get_session", "unwrap_viewer"]


@dataclass
class RunOutcome:
    """A finished registration as the GUI keeps it for export.

    ``result.transform`` maps fixed world RAS mm -> moving world RAS mm. ``fixed`` and
    ``moving`` are the exact Volumes given to ``register()`` (moving with its *file*
    affine); ``warped`` is moving(T(x)) on the fixed grid; ``inputs`` are the layers'
    source files (or None for layers not read from a file).
    """

    result: RegistrationResult
    fixed: Volume
    moving: Volume
    warped: Volume
    fixed_layer_name: str
    moving_layer_name: str
    inputs: dict[str, str | None] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


class RegistrationSession:
    """Roles (fixed, moving, mask layers) and results for one viewer.

    Signals: ``roles_changed()`` when a role is reassigned; ``result_changed(outcome)``
    when a run finished (or the result was cleared, with None);
    ``init_requested(choice)`` when a panel asks the Register panel to start from an
    initialisation (e.g. ``"manual"``: the current alignment); ``settings_restored(fields)``
    when a saved session gives the Register panel its fields back. Panels talk through these
    signals and never look each other up.
    """

    roles_changed = Signal()
    result_changed = Signal(object)
    init_requested = Signal(str)
    settings_restored = Signal(object)  # a restored session's Register panel fields

    def __init__(self) -> None:
        self.fixed_layer: Any = None
        self.moving_layer: Any = None
        self.mask_layer: Any = None
        self.moving_mask_layer: Any = None  # Labels layer: moving voxels > 0 drive the metric
        self.outcome: RunOutcome | None = None
        self.warped_layer: Any = None
        self.cost_panel: Any = None  # the docked CostPlotPanel, created on first run
        self.running = False  # a registration of this viewer runs (set by its panel)
        # the ortho views show the coronal and sagittal planes too (set by OrthoViews):
        # live frames then draw all three planes through the cursor, else only one
        self.ortho_views = False
        # published by their panels for sessions: the Register panel's fields and
        # parameters ({"fields": ..., "parameters": ...}), the Landmarks panel's layers
        self.register_settings: dict[str, Any] = {}
        self.landmark_layers: tuple[Any, Any] | None = None

    def request_init(self, choice: str) -> bool:
        """Ask the Register panel(s) to use the initialisation ``choice`` (one of
        ``INIT_CHOICES``' values). True if a panel is listening."""
        listening = len(self.init_requested) > 0
        self.init_requested.emit(choice)
        return listening

    def set_roles(self, fixed: Any, moving: Any, mask: Any = None) -> None:
        changed = (fixed, moving, mask) != (self.fixed_layer, self.moving_layer,
                                            self.mask_layer)
        self.fixed_layer, self.moving_layer, self.mask_layer = fixed, moving, mask
        if changed:
            self.roles_changed.emit()

    def mask_volumes(self, to_volume: Callable[[Any], Any]) -> dict[str, Any]:
        """``register()``'s mask arguments from the chosen Labels layers."""
        return {k: to_volume(v) for k, v in self._mask_layers().items() if v is not None}

    def mask_sources(self, to_path: Callable[[Any], Any]) -> dict[str, Any]:
        """The masks' source files for a run record (None: no mask)."""
        return {k: None if v is None else to_path(v) for k, v in self._mask_layers().items()}

    def _mask_layers(self) -> dict[str, Any]:
        return {"fixed_mask": self.mask_layer, "moving_mask": self.moving_mask_layer}

    def set_outcome(self, outcome: RunOutcome | None) -> None:
        self.outcome = outcome
        self.result_changed.emit(outcome)


_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def unwrap_viewer(viewer: Any) -> Any:
    """The real viewer behind napari's ``PublicOnlyProxy``.

    napari hands plugin widgets a fresh proxy each time; proxies of one viewer are
    different objects (and so are the layers read through them), so roles compared by
    identity and the per-viewer session need the wrapped object.
    """
    return getattr(viewer, "__wrapped__", viewer)


def get_session(viewer: Any) -> RegistrationSession:
    """The session of ``viewer`` (created on first use)."""
    viewer = unwrap_viewer(viewer)
    session = _SESSIONS.get(viewer)
    if session is None:
        session = RegistrationSession()
        _SESSIONS[viewer] = session
    return session
