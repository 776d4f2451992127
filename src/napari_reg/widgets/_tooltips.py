"""Tooltips of every panel control: what it does and in which units.

Kept in one table (panel class -> attribute -> text) so the texts read consistently and
each panel only calls :func:`apply_tooltips` once at the end of its ``__init__``. A
control that already has a tooltip keeps it. World coordinates are RAS millimetres;
transforms map fixed world -> moving world (see the README's conventions).
"""

from __future__ import annotations

from typing import Any

__all__ = ["TOOLTIPS", "apply_tooltips"]

_FILE = " Type a path or press 'Select file'."

TOOLTIPS: dict[str, dict[str, str]] = {
    "LoadWidget": {
        "fixed": "The fixed (reference) image layer: the result lives on its grid.",
        "moving": "The moving image layer: it is warped onto the fixed image.",
        "fixed_file": "A NIfTI / MGH / Analyze / MINC file to open as the fixed image." + _FILE,
        "open_fixed": "Open the fixed file as a layer (world RAS mm) and make it the fixed "
                      "image.",
        "moving_file": "A NIfTI / MGH / Analyze / MINC file to open as the moving image."
                       + _FILE,
        "open_moving": "Open the moving file as a layer (world RAS mm) and make it the moving "
                       "image.",
        "swap": "Exchange the fixed and the moving image.",
        "opacity": "Opacity of the moving image (0 = hidden, 1 = opaque).",
    },
    "RegisterWidget": {
        "preset": "What is estimated: rigid (6 parameters), affine (12), or affine followed "
                  "by a deformable B-spline or diffeomorphic (SyN) stage.",
        "metric": "How similarity is measured: MI / NMI for different contrasts (T1 vs T2), "
                  "NCC / SSD / SAD for the same contrast.",
        "init": "Where the optimiser starts: centres of mass, image centres, principal "
                "axes, a landmark fit, the current manual alignment, or identity.",
        "fixed_points": "Points layer with the fixed image's landmarks (world mm), paired by "
                        "id with the moving landmarks.",
        "moving_points": "Points layer with the moving image's landmarks (world mm), paired "
                         "by id with the fixed landmarks.",
        "live": "Show the moving image warped by the current estimate while the optimiser "
                "runs (a coarse overlay on the fixed grid).",
        "run_button": "Start the registration on a worker thread; the viewer stays usable.",
        "stop_button": "Stop the running registration (within a second); the best "
                       "estimate so far is kept.",
        "iterations": "Maximum optimiser iterations per pyramid level, coarsest first, "
                      "comma separated (e.g. 200, 200, 100, 50).",
        "samples": "Voxels sampled for the metric per level, coarsest first, comma "
                   "separated (more = steadier, slower).",
        "seed": "Seed of the random voxel sampling (same seed and inputs = same result).",
        "_collapsible": "Pyramid levels, iterations, samples, seed and the deformable "
                        "model's regularisation.",
    },
    "ManualWidget": {
        "translate": "Shift of the moving image along this world axis, in mm (x = right, "
                     "y = anterior, z = superior).",
        "rotate": "Rotation of the moving image about this world axis through the rotation "
                  "centre, in degrees.",
        "centre": "Point the rotations turn about: the moving image's centre or the "
                  "cursor position.",
        "reset_button": "Put the images back where their files place them.",
        "undo_button": "Undo the last change of the manual alignment.",
        "use_init": "Start the next registration from this manual alignment.",
        "key_step": "Distance one arrow key moves the image in the canvas, in mm.",
    },
    "LandmarksWidget": {
        "fixed_points": "Points layer holding the fixed image's landmarks (world mm).",
        "moving_points": "Points layer holding the moving image's landmarks (world mm).",
        "new_layers": "Make an empty landmark Points layer on the fixed and on the moving "
                      "image.",
        "click_fixed": "Add fixed landmarks by clicking on the fixed image in a 2D slice.",
        "click_moving": "Add moving landmarks by clicking on the moving image in a 2D slice.",
        "select_mode": "Select and drag landmarks to move them.",
        "delete": "Delete the selected landmark pair (both sides, same id).",
        "undo_button": "Undo the last landmark change.",
        "kind": "Transform fitted to the pairs: rigid, similarity (+ scale), affine, or a "
                "thin-plate spline (deformable).",
        "smoothing": "Thin-plate spline smoothing, in mm (0 = pass exactly through every "
                     "pair).",
        "fit_button": "Fit the transform to the paired landmarks and show the residuals "
                      "(mm).",
        "preview": "Show the moving image warped by the fit, resampled on the fixed grid.",
        "use_init": "Start the next registration from the landmark fit.",
        "load_side": "Which side a loaded landmark file goes to.",
        "load_button": "Read landmarks (CSV, 3D Slicer .fcsv / .mrk.json; world mm) into "
                       "the chosen side.",
        "save_button": "Write both landmark sets (world mm) as name_fixed / name_moving "
                       "files.",
        "table": "Landmark pairs by id with their fit residuals in mm; select a row to "
                 "jump to it.",
    },
    "QCWidget": {
        "source": "What to inspect: the last registration result or the current manual / "
                  "landmark alignment.",
        "square": "Side of the checkerboard squares, in mm.",
        "show_checker": "Show fixed and warped images in alternating squares.",
        "show_difference": "Show fixed minus warped (each scaled 0-1): for one modality, "
                           "0 where they agree.",
        "show_local": "Show 1 - |local correlation| in a window of a few mm: dark where "
                      "structures line up whatever the contrasts (T1 vs T2), bright where "
                      "edges are misplaced.",
        "show_edges": "Draw the fixed image's edges over the warped image.",
        "flicker": "Alternate the warped and fixed images (grey, drawn above the other "
                   "images) to spot residual motion.",
        "flicker_ms": "How long each image shows while flickering, in milliseconds.",
        "fade": "Opacity of the warped image over the fixed one (0 = fixed only, 1 = "
                "warped only).",
        "show_deformation": "For deformable results: Jacobian determinant (local volume "
                            "change; <= 0 marks folds) and a deformed grid.",
        "grid_mm": "Spacing of the deformed grid's lines, in mm.",
        "grid_linear": "Show the deformation alone (the affine part taken out): the grid "
                       "stays straight and the Jacobian 1 where the map is affine.",
        "show_3d": "Iso-surfaces of fixed (cyan) and warped (orange) in a 3D view; other "
                   "layers are hidden until another view is shown.",
        "clear_button": "Remove every QC layer; your layers are as they were.",
        "fixed_points": "Fixed landmarks for the target registration error (mm).",
        "moving_points": "Moving landmarks for the target registration error (mm).",
        "fixed_labels": "Fixed Labels layer for the Dice overlap.",
        "moving_labels": "Moving Labels layer for the Dice overlap.",
        "compute": "Compute NCC, MI, landmark error (mm) and Dice before and after.",
        "table": "Similarity, landmark error (mm) and Dice before and after registration.",
    },
    "ExportWidget": {
        "save_transform_button": "Write the transform (fixed -> moving world) in the chosen "
                                 "format.",
        "warped_file": "NIfTI file for the moving image resampled on the fixed grid." + _FILE,
        "save_warped_button": "Write the warped moving image on the fixed grid (NIfTI).",
        "record_file": "JSON file with the inputs and settings of the run (replayable with "
                       "'napari-reg register --replay')." + _FILE,
        "save_record_button": "Write the run record (JSON).",
        "apply_button": "Warp the chosen layer with the transform (labels: nearest "
                        "neighbour; points: inverse map).",
        "open_session_button": "Reopen a saved session folder (images, landmarks, "
                               "result).",
    },
    "AtlasWidget": {
        "subject": "The image to segment: atlases are registered onto it.",
        "add_row": "Add an atlas row (an image layer and its labels layer).",
        "remove_row": "Remove the last atlas row.",
        "image_file": "Atlas image file to open." + _FILE,
        "labels_file": "Atlas labels file (integer label map on the atlas image's grid) to "
                       "open." + _FILE,
        "open_files": "Open the atlas image and labels files as a new atlas row.",
        "transform": "Transform registering each atlas to the subject.",
        "metric": "Similarity measure of the atlas registrations.",
        "propagation": "How atlas labels are carried onto the subject grid.",
        "fusion": "How the atlases' labels are combined per voxel: majority vote or "
                  "votes weighted by local image similarity.",
        "similarity": "Local similarity measure used to weight the votes.",
        "radius": "Radius of the local similarity window, in mm.",
        "run_button": "Register the atlases and fuse their labels on a worker thread.",
        "stop_button": "Stop the atlas registrations.",
        "progress": "Atlases done out of all.",
    },
    "MotionWidget": {
        "series": "The 4D image layer (a time series of volumes) to correct frame by frame.",
        "reference": "What every frame is aligned to: the first frame, the mean of all "
                     "frames, or the frame number below.",
        "reference_frame": "Index of the reference frame (0 = first), when the reference is "
                           "'frame number below'.",
        "transform": "Motion model fitted to each frame (rigid: 3 shifts in mm, 3 rotations "
                     "in degrees).",
        "metric": "Similarity measure between a frame and the reference.",
        "threshold": "Framewise displacement above which a frame is flagged, in mm.",
        "run_button": "Correct the series on a worker thread; the traces grow as frames "
                      "finish.",
        "stop_button": "Stop the correction; frames done so far are kept.",
        "export_dir": "Folder for the corrected series, the per-frame transforms and "
                      "motion.tsv. Type a path or press 'Choose directory'.",
        "export_button": "Write the corrected series, the transforms and motion.tsv "
                         "(shifts in mm, rotations in degrees, FD in mm).",
        "progress": "Frames done out of all.",
    },
    "CostPlotPanel": {
        "clear_button": "Remove the curves of earlier runs.",
        "plot": "Metric value (lower is better) against iteration; dashed lines mark "
                "pyramid levels and stages.",
    },
}


def _set(control: Any, text: str) -> None:
    """Set ``text`` unless the control already has a tooltip (magicgui or Qt widget)."""
    if hasattr(control, "tooltip") and not callable(control.tooltip):
        if not control.tooltip:
            control.tooltip = text
        # magicgui puts it on the inner Qt widget only; a slider's number box sits beside
        native = getattr(control, "native", None)
        if native is not None and not native.toolTip():
            native.setToolTip(control.tooltip)
    elif hasattr(control, "setToolTip") and not control.toolTip():
        control.setToolTip(text)


def apply_tooltips(panel: Any) -> None:
    """Give ``panel``'s controls their tooltips from :data:`TOOLTIPS` (by class name)."""
    for attribute, text in TOOLTIPS.get(type(panel).__name__, {}).items():
        control = getattr(panel, attribute, None)
        for item in control if isinstance(control, list | tuple) else [control]:
            if item is not None:
                _set(item, text)
