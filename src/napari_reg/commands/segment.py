"""``napari-reg segment SUBJECT --atlas IMAGE LABELS [--atlas ...] -o OUTDIR``.

Registers every atlas image to the subject (subject = FIXED), propagates its labels and
fuses them. Writes OUTDIR/labels.nii.gz (fused labels on the subject grid),
OUTDIR/confidence.nii.gz (winning share of the votes), OUTDIR/atlas_<k>.tfm (ITK; maps
SUBJECT physical points to atlas k's points; the affine part for deformable runs, which
add register's ANTs layout: atlas_<k>.mat, atlas_<k>_warp.nii.gz (deformation only,
-t atlas_<k>_warp.nii.gz -t atlas_<k>.tfm), atlas_<k>_inverse_warp.nii.gz and
atlas_<k>_whole_map_field.nii.gz, the whole map used alone), OUTDIR/segment.json
(inputs, parameters, notes, Dice) and, with --truth, OUTDIR/dice.tsv.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ..core.atlas.fusion import FUSION_METHODS, SIMILARITIES
from ..core.atlas.labels import PROPAGATION_METHODS
from ..core.engine.presets import METRICS

RECORD = "segment.json"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "segment", help="segment a subject by registering labelled atlases and fusing labels",
        description=__doc__.split("\n\n", 1)[1])
    p.add_argument("subject", help="the image to segment")
    p.add_argument("--atlas", nargs=2, action="append", required=True,
                   metavar=("IMAGE", "LABELS"), help="an atlas image and its label map "
                   "(repeat for several atlases)")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--transform", default="affine",
                   help="registration model (default affine; deformable stages when available)")
    p.add_argument("--metric", choices=list(METRICS), default="mi",
                   help="registration metric (default mi: safe across contrasts)")
    p.add_argument("--levels", type=int, default=4, help="pyramid levels (default 4)")
    p.add_argument("--propagation", choices=list(PROPAGATION_METHODS), default="nearest",
                   help="nearest label, or per-label linear interpolation + argmax")
    p.add_argument("--fusion", choices=list(FUSION_METHODS), default="weighted",
                   help="majority vote or locally weighted voting (default)")
    p.add_argument("--similarity", choices=list(SIMILARITIES), default="lncc",
                   help="local similarity of weighted voting (default lncc)")
    p.add_argument("--radius", type=float, default=3.0,
                   help="similarity window half-width in mm (default 3)")
    p.add_argument("--truth", help="ground-truth labels on the subject grid: Dice per label")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..core.atlas.fusion import dice_table, segment_with_atlases
    from ..core.atlas.labels import Atlas
    from ..core.optimize import Cancelled
    from ..core.transforms.field import DisplacementField
    from ..io.output_set import OutputSet
    from ..io.result_layout import ants_layout_names, split_whole_map, write_ants_layout
    from ..io.transform_files import write_itk_transform
    from ..io.volumes import load_volume, save_volume, volume_name

    out = Path(args.output)
    try:
        inputs = [args.subject, *[p for pair in args.atlas for p in pair]]
        inputs += [args.truth] if args.truth else []
        missing = [p for p in inputs if not Path(p).is_file()]
        if missing:
            raise ValueError(f"file(s) not found: {', '.join(missing)}")
        planned = ["labels.nii.gz", "confidence.nii.gz", RECORD]
        planned += ["dice.tsv"] if args.truth else []
        outputs = OutputSet(out, inputs=inputs, overwrite=args.overwrite, marker=RECORD,
                            planned=planned)
        subject = load_volume(args.subject)
        atlases = [Atlas(load_volume(image), load_volume(labels), volume_name(image))
                   for image, labels in args.atlas]
        truth = load_volume(args.truth) if args.truth else None

        def progress(p) -> None:
            if p.phase != "register":
                print(f"atlas {p.atlas_index + 1}/{p.n_atlases}: {p.phase}", file=sys.stderr)

        result = segment_with_atlases(
            subject, atlases, transform=args.transform, metric=args.metric,
            propagation=args.propagation, fusion=args.fusion, similarity=args.similarity,
            radius_mm=args.radius, truth=truth, register_options={"levels": args.levels},
            callback=progress)
    except (KeyboardInterrupt, Cancelled):
        from ..io.output_set import interrupted_outputs_note

        print(f"\nnapari-reg segment: interrupted; {interrupted_outputs_note()}",
              file=sys.stderr)
        return 130
    except (ValueError, OSError) as exc:
        print(f"napari-reg segment: error: {exc}", file=sys.stderr)
        return 1
    for note in result.notes:
        print(f"warning: {note}", file=sys.stderr)
    transforms = [np.asarray(t.matrix).tolist() if t.is_linear else None
                  for t in result.transforms]
    record = {"subject": str(Path(args.subject).resolve()),
              "atlases": [[str(Path(p).resolve()) for p in pair] for pair in args.atlas],
              "truth": args.truth, "direction": "transforms map subject world (RAS mm) points "
              "to atlas world points", "parameters": {k: getattr(args, k) for k in (
                  "transform", "metric", "levels", "propagation", "fusion", "similarity",
                  "radius")},
              "labels": result.values.tolist(), "notes": result.notes,
              "matrices_ras_subject_to_atlas": transforms,
              "dice": {k: {str(lab): v for lab, v in d.items()} for k, d in
                       (result.dice or {}).items()}}
    # One output set: staged, moved into place whole, segment.json last.
    with outputs:
        save_volume(result.labels, outputs.path("labels.nii.gz"))
        save_volume(result.confidence, outputs.path("confidence.nii.gz"), dtype=np.float32)
        for k, t in enumerate(result.transforms):
            if t.is_linear:
                write_itk_transform(t.matrix, outputs.path(f"atlas_{k + 1}.tfm"))
            else:  # deformable: register's ANTs layout (affine, warp, inverse, whole map)
                linear = np.asarray(result.results[k].matrix, dtype=np.float64)
                whole = DisplacementField.from_transform(t, subject.shape, subject.affine)
                warp, inverse_warp = split_whole_map(whole, linear, subject)
                write_ants_layout(outputs.path, ants_layout_names(f"atlas_{k + 1}"), linear,
                                  warp, inverse_warp, whole)
        if result.dice is not None:
            columns = list(result.dice)
            lines = ["label\t" + "\t".join(columns)]
            lines += [f"{lab}\t" + "\t".join(f"{result.dice[c].get(lab, float('nan')):.4f}"
                                              for c in columns) for lab in result.dice["fused"]]
            outputs.path("dice.tsv").write_text("\n".join(lines) + "\n")
        outputs.path(RECORD).write_text(json.dumps(record, indent=2))
    if result.dice is not None:
        print(dice_table(result.dice))
    print(out / "labels.nii.gz")
    return 0
