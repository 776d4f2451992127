"""Save the viewer's registration session to a folder and restore it (GUI side).

What is gathered: the session's fixed / moving / mask layers (the images with their file
affines; the fixed and moving masks as the Register panel hands them to the run),
the Register panel's fields and the parameters to replay (the kept result's, else the
panel's), the current manual / landmark alignment, the Landmarks panel's paired points
and the kept result. Panels publish what they own on the session
(``register_settings``, ``landmark_layers``) and restore it from the session's
``settings_restored`` signal; nothing here reaches into a panel. The folder format is
:mod:`napari_reg.session_folder` (no Qt).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..display_grid import display_copy
from ..io.landmarks import Landmarks
from ..session_folder import SessionState, load_session, save_session
from ._alignment import get_alignment
from ._layer_volumes import layer_volume, source_path
from ._live_run import warped_style
from ._lm_files import add_landmark_layer, read_for_layer
from ._lm_model import ids_of, world_points
from ._register_settings import LIVE_LAYER_NAME
from ._session import RunOutcome, get_session

__all__ = ["gather_session", "save_viewer_session", "restore_viewer_session"]


def gather_session(viewer: Any) -> SessionState:
    """The viewer's session as a :class:`SessionState` (ValueError if no images)."""
    session = get_session(viewer)
    f, m, mask = session.fixed_layer, session.moving_layer, session.mask_layer
    moving_mask = session.moving_mask_layer
    if f is None or m is None:
        raise ValueError("Choose the fixed and the moving image (Load panel) first.")
    published = dict(session.register_settings or {})
    outcome = session.outcome
    parameters = (dict(outcome.result.parameters) if outcome is not None
                  else dict(published.get("parameters") or {}))
    state = SessionState(
        fixed=layer_volume(f, use_file_affine=True),
        moving=layer_volume(m, use_file_affine=True),
        fixed_mask=layer_volume(mask) if mask is not None else None,
        moving_mask=layer_volume(moving_mask) if moving_mask is not None else None,
        names={"fixed": f.name, "moving": m.name, **({"mask": mask.name} if mask else {}),
               **({"moving_mask": moving_mask.name} if moving_mask else {})},
        register_settings=dict(published.get("fields") or {}),
        parameters=parameters,
        alignment=np.asarray(get_alignment(viewer).matrix, dtype=np.float64))
    pts = session.landmark_layers
    if pts is not None and all(p is not None and p in viewer.layers for p in pts) and len(
            pts[0].data) and len(pts[1].data):
        state.landmarks = (Landmarks(ids_of(pts[0]), world_points(pts[0])),
                           Landmarks(ids_of(pts[1]), world_points(pts[1])))
    if outcome is not None:
        state.result, state.warped = outcome.result, outcome.warped
    return state


def save_viewer_session(viewer: Any, folder: str | Path, overwrite: bool = False) -> Path:
    """Write the viewer's session to ``folder`` (refuses to replace a loaded file)."""
    protected = [p for p in (source_path(lyr) for lyr in viewer.layers) if p]
    return save_session(folder, gather_session(viewer), overwrite=overwrite, inputs=protected)


def _open(viewer: Any, path: Path, name: str | None, **style: Any) -> Any:
    layer = viewer.open(str(path), plugin="napari-reg")[0]
    if name:
        layer.name = name
    for key, value in style.items():
        setattr(layer, key, value)
    return layer


def restore_viewer_session(viewer: Any, folder: str | Path) -> SessionState:
    """Open a session folder in ``viewer``: layers, roles, alignment, landmarks, the
    Register panel's fields and the kept result (shown as the warped layer)."""
    folder = Path(folder)
    state = load_session(folder)  # SessionError before anything changes in the viewer
    session = get_session(viewer)
    names = state.names
    fixed = _open(viewer, folder / "inputs/fixed.nii.gz", names.get("fixed"), colormap="gray")
    moving = _open(viewer, folder / "inputs/moving.nii.gz", names.get("moving"),
                   colormap="magenta", blending="additive")
    mask = (_open(viewer, folder / "inputs/fixed_mask.nii.gz", names.get("mask"))
            if state.fixed_mask is not None else None)
    session.set_roles(fixed, moving, mask)
    if state.moving_mask is not None:
        session.moving_mask_layer = _open(viewer, folder / "inputs/moving_mask.nii.gz",
                                          names.get("moving_mask"))
    if state.alignment is not None and not np.allclose(state.alignment,
                                                       np.eye(len(state.alignment))):
        get_alignment(viewer).set(state.alignment)
    if state.landmarks is not None:
        made = []
        for side, image, colour in (("fixed", fixed, "yellow"), ("moving", moving, "cyan")):
            layer = add_landmark_layer(viewer, image, side, colour)
            data, ids = read_for_layer(folder / f"landmarks/{side}.csv", layer)
            layer.data = data
            layer.features = {"id": np.array(ids, dtype=object)}
            made.append(layer)
        session.landmark_layers = (made[0], made[1])
    if state.register_settings:
        session.settings_restored.emit(dict(state.register_settings))
    if state.result is not None and state.warped is not None:
        shown = display_copy(state.warped)  # axis-aligned, as napari can draw it
        warped = viewer.add_image(np.asarray(shown.data, dtype=np.float32),
                                  name=LIVE_LAYER_NAME, affine=shown.affine,
                                  **warped_style(moving))
        session.warped_layer = warped
        moving.visible = False
        session.set_outcome(RunOutcome(
            result=state.result, fixed=state.fixed, moving=state.moving, warped=state.warped,
            fixed_layer_name=fixed.name, moving_layer_name=moving.name,
            inputs={"fixed": source_path(fixed), "moving": source_path(moving),
                    "fixed_mask": source_path(mask) if mask is not None else None,
                    "moving_mask": (source_path(session.moving_mask_layer)
                                    if session.moving_mask_layer is not None else None)},
            settings=dict(state.parameters)))
    return state
