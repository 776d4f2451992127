"""``napari-reg template IMAGES... -o OUTDIR``: build an unbiased groupwise template.

Writes OUTDIR/template.nii.gz, OUTDIR/transforms/<image>.tfm (ITK, maps TEMPLATE physical
points to that image's points; for deformable maps the affine part, written in register's
ANTs layout with ``<image>.mat``, ``<image>_warp.nii.gz`` (deformation only, applied before
the ``.tfm``), ``<image>_inverse_warp.nii.gz`` and ``<image>_whole_map_field.nii.gz``, the
whole map used alone) and OUTDIR/template.json (inputs, parameters, per-iteration history), the
record last: a template whose record exists is finished and reused by later runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..core.engine.presets import LINEAR_MODELS, METRICS

TEMPLATE_RECORD = "template.json"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "template", help="build an unbiased template from a group of images",
        description="Iteratively register every image to the current template, average, and "
        "move the average to the group's mean (inverse mean transform), as ANTs' template "
        "scripts do. Transforms map template world points to image world points.")
    p.add_argument("images", nargs="*", help="the group's images")
    p.add_argument("--list", help="text file with one image path per line")
    p.add_argument("-o", "--output", required=True, help="output folder")
    add_template_options(p)
    p.add_argument("--workers", type=int, default=None,
                   help="local worker processes (default: CPU count; 0 = this process)")
    p.add_argument("--scheduler", help="Dask scheduler address (e.g. tcp://host:8786)")
    p.set_defaults(func=run)


def add_template_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("template")
    g.add_argument("--template-iterations", type=int, default=4,
                   help="template iterations (default 4)")
    g.add_argument("--transform", default="affine",
                   help=f"registration model ({', '.join(LINEAR_MODELS)}, or a deformable "
                   "stage when available; default affine)")
    g.add_argument("--metric", choices=list(METRICS), default="mi")
    g.add_argument("--affine-mean", choices=["log", "arithmetic"], default="log")
    g.add_argument("--shape-step", type=float, default=0.25,
                   help="deformable correction step (ANTs gradient step; default 0.25)")
    g.add_argument("--reference", help="grid of the template (default: the first image)")
    g.add_argument("--levels", type=int, default=4, help="pyramid levels (default 4)")


def _images(args: argparse.Namespace) -> list[str]:
    from ..batch import BatchError, read_list

    images = list(args.images) + (read_list(args.list) if args.list else [])
    missing = [p for p in images if not Path(p).is_file()]
    if missing:
        raise BatchError(f"image file(s) not found: {', '.join(missing)}")
    return images


def build_template_files(images: list[str], output: str | os.PathLike, options: dict[str, Any],
                         workers: int | None = None, scheduler: Any = None,
                         log=print) -> Path:
    """Build (or reuse) OUTPUT/template.nii.gz from image files; return its path."""
    from ..batch import executor_mapper
    from ..core.atlas.template import build_template
    from ..core.transforms.field import DisplacementField
    from ..io.output_set import OutputSet
    from ..io.result_layout import ants_layout_names, split_whole_map, write_ants_layout
    from ..io.transform_files import write_itk_transform
    from ..io.volumes import load_volume, save_volume, volume_name

    output = Path(output)
    record_path, template_path = output / TEMPLATE_RECORD, output / "template.nii.gz"
    resolved = [str(Path(p).resolve()) for p in images]
    if record_path.is_file() and template_path.is_file():
        done = json.loads(record_path.read_text())
        if done.get("images") == resolved:
            log(f"template already built: {template_path} (delete {record_path} to rebuild)")
            return template_path
    names = unique_names([volume_name(p) for p in images])
    planned = [TEMPLATE_RECORD, template_path.name]
    outputs = OutputSet(output, inputs=[*images, options.get("reference")], overwrite=True,
                        marker=TEMPLATE_RECORD, planned=planned)
    volumes = [load_volume(p) for p in images]
    reference = load_volume(options["reference"]) if options.get("reference") else None
    kwargs = {k: v for k, v in options.items() if k != "reference"}
    n_iter = kwargs.get("iterations", 4)

    def progress(event) -> None:
        if event.phase in ("registered", "average"):
            what = "averaged" if event.phase == "average" else f"image {event.image_index + 1}"
            log(f"template iteration {event.iteration + 1}/{n_iter}: {what}")

    if workers == 0 and scheduler is None:
        result = build_template(volumes, reference, callback=progress, **kwargs)
    else:
        with executor_mapper(workers, scheduler) as mapper:
            result = build_template(volumes, reference, callback=progress, mapper=mapper,
                                    **kwargs)
    entries = []
    for note in result.notes:
        log(f"warning: {note}")
    # One output set: staged, moved into place whole, template.json last.
    with outputs:
        for path, name, transform, linear in zip(images, names, result.transforms,
                                                 result.linear_matrices, strict=True):
            if transform.is_linear:
                rel = f"transforms/{name}.tfm"
                write_itk_transform(transform.matrix, outputs.path(rel))
                entries.append({"image": str(Path(path).resolve()),
                                "transform": str(outputs.final(rel)),
                                "matrix_ras_template_to_image":
                                    np.asarray(transform.matrix).tolist()})
            else:  # register's ANTs layout: affine, warp, inverse warp, whole map
                grid = result.template
                whole = DisplacementField.from_transform(transform, grid.shape, grid.affine)
                warp, inverse_warp = split_whole_map(whole, linear, grid)
                layout = ants_layout_names(f"transforms/{name}")
                write_ants_layout(outputs.path, layout, linear, warp, inverse_warp, whole)
                entries.append({"image": str(Path(path).resolve()),  # transform: used alone
                                "transform": str(outputs.final(layout["whole_map"])),
                                **{key: str(outputs.final(rel)) for key, rel in layout.items()},
                                "matrix_ras_template_to_image": linear.tolist()})
        save_volume(result.template, outputs.path(template_path.name), dtype=np.float32)
        record = {"images": resolved, "notes": result.notes,
                  "direction": "transforms map template world (RAS mm) points to image world "
                  "points", "parameters": result.parameters,
                  "history": [h.to_dict() for h in result.history], "transforms": entries}
        outputs.path(TEMPLATE_RECORD).write_text(json.dumps(record, indent=2, default=str))
    return template_path


def unique_names(names: list[str]) -> list[str]:
    """``names`` with repeats made distinct (``t1, t1_2, ...``): no two outputs share a name."""
    used: set[str] = set()
    out = []
    for name in names:
        unique, k = name or "image", 2
        while unique in used:
            unique, k = f"{name}_{k}", k + 1
        used.add(unique)
        out.append(unique)
    return out


def template_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"iterations": args.template_iterations, "transform": args.transform,
            "metric": args.metric, "affine_mean": args.affine_mean,
            "shape_step": args.shape_step, "reference": args.reference,
            "register_options": {"levels": args.levels}}


def run(args: argparse.Namespace) -> int:
    from ..core.optimize import Cancelled

    try:
        images = _images(args)
        path = build_template_files(images, args.output, template_options(args),
                                    args.workers, args.scheduler,
                                    log=lambda m: print(m, file=sys.stderr))
    except (KeyboardInterrupt, Cancelled):
        from ..io.output_set import interrupted_outputs_note

        print(f"\nnapari-reg template: interrupted; {interrupted_outputs_note()}",
              file=sys.stderr)
        return 130
    except (ValueError, OSError) as exc:
        print(f"napari-reg template: error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0
