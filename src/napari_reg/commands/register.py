"""``napari-reg register FIXED MOVING -o OUTDIR``: register and write the outputs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core.engine.presets import INIT_METHODS, METRICS, TRANSFORMS
from ..core.optimize import Cancelled
from ._progress import TerminalProgress


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "register",
        help="register MOVING to FIXED and write transform.tfm, warped.nii.gz, run.json",
        description="Register MOVING to FIXED. Writes OUTDIR/transform.tfm (ITK text, LPS; maps "
        "fixed physical points to moving points, as ITK/ANTs/Slicer resampling expects), "
        "OUTDIR/warped.nii.gz (moving resampled on the fixed grid) and OUTDIR/run.json "
        "(parameters, versions, cost history, timings; replay with --replay).",
    )
    p.add_argument("fixed", nargs="?", help="fixed (reference) image")
    p.add_argument("moving", nargs="?", help="moving image")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--transform", choices=list(TRANSFORMS), default="affine",
                   help="bspline and syn (diffeomorphic) run an affine stage first unless "
                   "--no-linear; they also write warp.nii.gz + inverse_warp.nii.gz (ANTs layout: "
                   "-t warp.nii.gz -t transform.tfm), whole_map_field.nii.gz (the whole "
                   "map, use it alone) and jacobian.nii.gz")
    p.add_argument("--no-linear", action="store_true",
                   help="with bspline/syn: no affine stage before the deformable one")
    p.add_argument("--metric", choices=list(METRICS), default="mi",
                   help="similarity metric (default: mi, suits T1/T1 and T1/T2)")
    p.add_argument("--init", choices=list(INIT_METHODS), default=None,
                   help="initialisation (default: com, or landmarks when --landmarks is given)")
    p.add_argument("--landmarks", nargs=2, metavar=("FIXED_CSV", "MOVING_CSV"),
                   help="paired landmarks (CSV id,x,y,z world RAS mm, or Slicer .fcsv/.mrk.json)")
    p.add_argument("--fixed-mask", help="mask image: sample the fixed image only where non-zero")
    p.add_argument("--moving-mask",
                   help="mask image of the moving image: sample points whose mapped position "
                   "falls outside it (missing tissue, a lesion) are left out of the metric")
    p.add_argument("--initial", help="initial transform file (ITK .tfm/.txt/.mat/.h5, LTA, "
                   "AFNI .1D, X5; a plain 4x4 matrix needs --initial-format)")
    p.add_argument("--initial-format", choices=["fsl", "ras", "itk", "itk-mat", "itk-h5",
                                                "lta", "afni", "x5"],
                   help="format of --initial when the file does not say it: fsl (FLIRT "
                   "-in MOVING -ref FIXED) or ras (greedy / c3d / ITK-SNAP)")
    adv = p.add_argument_group("advanced")
    adv.add_argument("--stages", nargs="+", choices=list(TRANSFORMS),
                     help="run several models in order, e.g. --stages rigid affine")
    adv.add_argument("--levels", type=int, default=4, help="pyramid levels (default 4)")
    adv.add_argument("--iterations", type=int, nargs="+", help="iterations per level")
    adv.add_argument("--samples", type=int, nargs="+", help="sample points per level")
    adv.add_argument("--optimizer", choices=["lbfgs", "gd"], default="lbfgs")
    adv.add_argument("--bins", type=int, help="histogram bins for mi/nmi")
    adv.add_argument("--seed", type=int, default=0, help="random seed of the sample draws")
    adv.add_argument("--deformable-metric", choices=["auto", "lncc", "ssd", "ncc", "mi", "nmi"],
                     help="metric of the bspline/syn stage (default: --metric for bspline; "
                     "auto for syn: lncc (local NCC) for one contrast, mi when the images "
                     "look like two)")
    adv.add_argument("--grid-spacing", type=float, metavar="MM",
                     help="bspline control-point spacing at the finest level (mm, default 10)")
    adv.add_argument("--bending-weight", type=float,
                     help="bspline bending-energy weight lambda, the same smoothness under "
                     "every metric (default 10; 1e3-1e5 smooths visibly)")
    adv.add_argument("--radius", type=int,
                     help="syn local NCC window radius in voxels (default 2)")
    p.add_argument("--replay", metavar="RUN_JSON",
                   help="re-run the job recorded in a run.json, or in a folder holding one "
                        "such as a saved GUI session (other options ignored)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=run)


def build_job(args: argparse.Namespace):
    from ..job import Job

    if args.replay:  # a run.json, or a folder holding one (e.g. a saved GUI session)
        replay = Path(args.replay)
        return Job.load(replay / "run.json" if replay.is_dir() else replay)
    if not args.fixed or not args.moving:
        raise SystemExit("napari-reg register: FIXED and MOVING are required (or --replay)")
    params: dict = {"transform": args.transform, "metric": args.metric, "levels": args.levels,
                    "optimizer": args.optimizer, "seed": args.seed}
    if args.init:
        params["init"] = args.init
    elif args.landmarks:
        params["init"] = "landmarks"
    for key in ("stages", "iterations", "samples"):
        if getattr(args, key):
            params[key] = getattr(args, key)
    if args.bins:
        params["metric_options"] = {"bins": args.bins}
    if args.no_linear and args.transform in ("bspline", "syn") and not args.stages:
        params["stages"] = [args.transform]
    if args.deformable_metric:
        params["deformable_metric"] = args.deformable_metric
    options = ({"grid_spacing_mm": args.grid_spacing, "bending_weight": args.bending_weight}
               if args.transform == "bspline" else {"radius": args.radius})
    options = {k: v for k, v in options.items() if v is not None}
    if options:
        params["deformable_options"] = options
    return Job(fixed=args.fixed, moving=args.moving, parameters=params,
               fixed_mask=args.fixed_mask, moving_mask=args.moving_mask,
               landmarks=tuple(args.landmarks) if args.landmarks else None,
               initial=args.initial, initial_format=args.initial_format)


def run(args: argparse.Namespace) -> int:
    from ..job import run_job

    job = build_job(args)
    progress = None if args.quiet else TerminalProgress()
    try:
        outputs = run_job(job, args.output, callback=progress, overwrite=args.overwrite)
    except KeyboardInterrupt:
        from ..io.output_set import interrupted_outputs_note

        print(f"\nnapari-reg: interrupted; {interrupted_outputs_note()}", file=sys.stderr)
        return 130
    except Cancelled:
        print("napari-reg: cancelled; no outputs written", file=sys.stderr)
        return 130
    except (ValueError, OSError) as exc:
        print(f"napari-reg register: error: {exc}", file=sys.stderr)
        return 1
    import json

    for note in json.loads(outputs["record"].read_text()).get("notes", []):
        print(f"napari-reg register: note: {note}", file=sys.stderr)
    for path in outputs.values():
        print(path)
    return 0
