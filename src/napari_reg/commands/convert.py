"""``napari-reg convert IN OUT --to FORMAT``: the same transform in another tool's format.

E.g. a FLIRT matrix for FSL users (``--to fsl --fixed FIXED --moving MOVING``, i.e. for
``flirt -in MOVING -ref FIXED -applyxfm -init OUT``), a greedy/c3d matrix (``--to ras``),
or a result folder as one ANTs ``Composite.h5``. The meaning never changes: the output
maps the same fixed points to the same moving points.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

WRITABLE = ["itk", "itk-mat", "itk-h5", "fsl", "ras", "field"]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "convert",
        help="write a transform in another tool's format (FSL FLIRT, greedy/c3d, ITK, ANTs)",
        description="Convert a transform file (or a `napari-reg register` output folder) to "
        "another format with the same meaning (fixed -> moving). Output formats: itk "
        "(.tfm text), itk-mat (ITK/ANTs binary .mat), itk-h5 (.h5 composite, warps too), "
        "fsl (FLIRT matrix for flirt -in MOVING -ref FIXED; needs --fixed and --moving), "
        "ras (greedy / c3d / ITK-SNAP), field (.nii.gz displacement field on --fixed's grid).",
    )
    p.add_argument("input", help="transform file or napari-reg register output folder")
    p.add_argument("output", help="file to write")
    p.add_argument("--to", choices=WRITABLE,
                   help="output format (default from the name: .tfm itk, .h5 itk-h5, "
                   ".nii.gz field; a .mat or .txt must be named)")
    p.add_argument("--from", dest="source_format",
                   help="input format when the file does not say it: fsl or ras")
    p.add_argument("--fixed", help="fixed (reference) image: needed for fsl and field")
    p.add_argument("--moving", help="moving image: needed for fsl")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..io.output_set import OutputSet
    from ..io.result_layout import result_chain
    from ..io.transforms import write_transform
    from ..io.volumes import load_volume
    from .apply import load_chain

    out = Path(args.output)
    try:
        source = Path(args.input)
        items = result_chain(source) if source.is_dir() else [(source, False)]
        # the one output rule (io/output_set.py): never over an input, never a silent replace
        outputs = OutputSet(out.parent, inputs=[*(p for p, _ in items), args.fixed,
                                                args.moving],
                            overwrite=args.overwrite, planned=[out.name])
        fixed = load_volume(args.fixed) if args.fixed else None
        moving = load_volume(args.moving) if args.moving else None
        transform = load_chain(items, fixed, moving, args.source_format)
        with outputs:
            write_transform(transform, outputs.path(out.name), format=args.to, fixed=fixed,
                            moving=moving)
    except (ValueError, OSError) as exc:
        print(f"napari-reg convert: error: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0
