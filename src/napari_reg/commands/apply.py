"""``napari-reg apply TRANSFORM --reference REF --input IMG -o OUT``: resample an image."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "apply",
        help="resample an image onto a reference grid through a saved transform",
        description="Resample INPUT onto the REFERENCE grid: out(x) = input(T(x)), where the "
        "transform T maps reference (fixed) physical points to input (moving) points, as "
        "written by `napari-reg register`.",
    )
    p.add_argument("transform", help="transform file: ITK .tfm/.txt/.mat, FSL .mat with --fsl, "
                   "or a displacement field .nii/.nii.gz (ITK/ANTs layout, e.g. field.nii.gz)")
    p.add_argument("--reference", required=True, help="image defining the output grid (fixed)")
    p.add_argument("--input", required=True, help="image to resample (moving)")
    p.add_argument("-o", "--output", required=True, help="output NIfTI path")
    p.add_argument("--interpolation", choices=["nearest", "linear", "cubic"], default=None,
                   help="default: nearest for label maps (integer data with few values, or a "
                   "name such as *seg*/*label*), linear otherwise")
    p.add_argument("--fsl", action="store_true",
                   help="the transform is an FSL FLIRT matrix (flirt -in INPUT -ref REFERENCE)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..core.resample import resample
    from ..io.displacement_fields import load_displacement_field
    from ..io.flat import PlanarPair
    from ..io.input_checks import check_linear_transform, check_warped
    from ..io.output_set import OutputSet
    from ..io.transform_files import read_transform
    from ..io.volumes import save_volume
    from ..job import load_role
    from ..layers import is_label_map

    out = Path(args.output)
    try:
        outputs = OutputSet(out.parent, inputs=(args.transform, args.reference, args.input),
                            overwrite=args.overwrite, planned=[out.name])
        # 2D files and one-slice volumes are resampled as 2D images
        pair = PlanarPair(load_role(args.reference, "reference image"),
                          load_role(args.input, "input image"))
        reference, image = pair.fixed, pair.moving
        if args.transform.endswith((".nii", ".nii.gz")):
            transform = load_displacement_field(args.transform)
        else:
            transform = check_linear_transform(read_transform(
                args.transform, fixed=pair.fixed3, moving=pair.moving3,
                format="fsl" if args.fsl else "auto"), args.transform, "transform")
        transform = pair.transform_from_file(transform, args.transform)
        interpolation = args.interpolation or (
            "nearest" if is_label_map(image.data, Path(args.input).name) else "linear")
        warped = resample(image, reference, transform, interpolation=interpolation)
        if interpolation != "nearest":
            warped = warped.with_data(warped.data.astype(np.float32))
        check_warped(warped, image, args.input, args.reference, [f"the transform {args.transform}"])
        with outputs:
            save_volume(pair.volume_for_file(warped), outputs.path(out.name))
    except (ValueError, OSError) as exc:
        print(f"napari-reg apply: error: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0

