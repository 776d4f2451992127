"""``napari-reg apply``: resample an image through a transform, a chain, or a result folder.

``napari-reg apply -t warp.nii.gz -t transform.tfm --reference FIXED --input MOVING -o OUT``
takes the chain in ANTs order (a fixed point goes through the first item first:
``x -> tn(...t1(x))``), ``[file,1]`` inverts a linear item. A ``napari-reg register``
output folder stands for its own chain; ``--inverse`` runs it backwards (fixed-space
images onto the moving grid).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

FORMAT_HELP = ("format of the files that do not say it themselves (plain 4x4 text "
               "matrices): fsl (FLIRT -omat, made with -in INPUT -ref REFERENCE) or ras "
               "(greedy / c3d / ITK-SNAP: RAS, fixed -> moving); also afni for a 12-number "
               "row not named *.1D")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "apply",
        help="resample an image onto a reference grid through transforms (ANTs-style chain)",
        description="Resample INPUT onto the REFERENCE grid: out(x) = input(T(x)), where T "
        "maps reference (fixed) physical points to input (moving) points. T is one file, a "
        "chain given with -t in ANTs order (-t warp.nii.gz -t transform.tfm; [file,1] "
        "inverts a linear item), or a `napari-reg register` output folder (--inverse: "
        "from the fixed image's space to the moving image's).",
    )
    p.add_argument("transform", nargs="?",
                   help="a transform file (ITK .tfm/.txt/.mat/.h5, displacement field "
                   ".nii.gz, FSL/greedy matrix with --format, LTA, AFNI .1D, X5) or a "
                   "napari-reg register output folder")
    p.add_argument("-t", "--transforms", action="append", metavar="FILE|[FILE,1]",
                   dest="chain", help="one item of a chain, in ANTs order; repeat it")
    p.add_argument("--inverse", action="store_true",
                   help="with a result folder or one linear file: apply the inverse map "
                   "(REFERENCE is then a moving-space image, INPUT a fixed-space one)")
    p.add_argument("--reference", required=True, help="image defining the output grid")
    p.add_argument("--input", required=True, help="image to resample")
    p.add_argument("-o", "--output", required=True, help="output NIfTI path")
    p.add_argument("--format", help=FORMAT_HELP)
    p.add_argument("--fsl", action="store_true", help="same as --format fsl")
    p.add_argument("--interpolation", choices=["nearest", "linear", "cubic"], default=None,
                   help="default: nearest for label maps (integer data with few values, or a "
                   "name such as *seg*/*label*), linear otherwise")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=run)


_ITEM = re.compile(r"^\[(.+),\s*([01])\s*\]$")


def parse_item(text: str) -> tuple[Path, bool]:
    """``file`` -> (file, False); ``[file,1]`` -> (file, True) (ANTs' inversion flag)."""
    m = _ITEM.match(text.strip())
    return (Path(m.group(1).strip()), m.group(2) == "1") if m else (Path(text), False)


def chain_items(args: argparse.Namespace) -> list[tuple[Path, bool]]:
    """The chain the arguments name, in ANTs order."""
    from ..io.result_layout import result_chain

    if args.chain and args.transform:
        raise ValueError("give the transform either as TRANSFORM or as a -t chain, not both")
    if args.chain:
        if args.inverse:
            raise ValueError("--inverse takes one file or a result folder; in a -t chain "
                             "invert items with [file,1] and list them in reverse order")
        return [parse_item(t) for t in args.chain]
    if not args.transform:
        raise ValueError("no transform: give TRANSFORM, a result folder or -t items")
    path = Path(args.transform)
    if path.is_dir():
        return result_chain(path, inverse=args.inverse)
    return [(path, args.inverse)]


def load_chain(items, reference, image, format: str | None, pair=None):
    """The chain as one reference->input transform (world RAS mm).

    ``reference``/``image`` lend their grids to formats that need them (FSL); with a
    ``pair`` (io.flat.PlanarPair) of one-slice images, each item is reduced to 2D.
    """
    import numpy as np

    from ..core.transforms.base import CompositeTransform, MatrixTransform
    from ..io.input_checks import check_linear_transform
    from ..io.transforms import TransformFileError, detect_format, load_transform

    if pair is not None:
        reference, image = pair.fixed3, pair.moving3
    transforms = []
    for path, invert in items:
        try:
            fmt = detect_format(path)
        except TransformFileError:
            if not format:
                raise
            fmt = format  # the file does not say; the user named it
        # an inverted FLIRT item was made with -in REFERENCE -ref INPUT
        fixed, moving = (image, reference) if invert else (reference, image)
        t = load_transform(path, fixed=fixed, moving=moving, format=fmt)
        if isinstance(t, MatrixTransform):
            m = np.linalg.inv(t.matrix) if invert else np.asarray(t.matrix)
            m = check_linear_transform(m, path, "transform")
            t = pair.transform_from_file(m, path) if pair is not None else MatrixTransform(m)
        elif invert:
            raise ValueError(f"[{path},1]: a warp is not inverted by a flag (ANTs "
                             "neither); use its inverse file, e.g. inverse_warp.nii.gz")
        elif pair is not None:
            t = pair.transform_from_file(t, path)
        transforms.append(t)
    return transforms[0] if len(transforms) == 1 else CompositeTransform(transforms)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..core.resample import resample
    from ..io.flat import PlanarPair
    from ..io.input_checks import check_warped
    from ..io.output_set import OutputSet
    from ..io.volumes import save_volume
    from ..job import load_role
    from ..layers import is_label_map

    out = Path(args.output)
    try:
        if args.fsl and args.format not in (None, "fsl"):
            raise ValueError("--fsl contradicts --format " + args.format)
        items = chain_items(args)
        outputs = OutputSet(out.parent, inputs=(*[p for p, _ in items], args.reference,
                                                args.input),
                            overwrite=args.overwrite, planned=[out.name])
        # 2D files and one-slice volumes are resampled as 2D images
        pair = PlanarPair(load_role(args.reference, "reference image"),
                          load_role(args.input, "input image"))
        reference, image = pair.fixed, pair.moving
        transform = load_chain(items, reference, image, "fsl" if args.fsl else args.format,
                               pair)
        interpolation = args.interpolation or (
            "nearest" if is_label_map(image.data, Path(args.input).name) else "linear")
        warped = resample(image, reference, transform, interpolation=interpolation)
        if interpolation != "nearest":
            warped = warped.with_data(warped.data.astype(np.float32))
        names = " then ".join(str(p) + (" (inverted)" if inv else "") for p, inv in items)
        check_warped(warped, image, args.input, args.reference, [f"the transform {names}"],
                     roles=("reference image", "input image"))
        with outputs:
            save_volume(pair.volume_for_file(warped), outputs.path(out.name))
    except (ValueError, OSError) as exc:
        print(f"napari-reg apply: error: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0
