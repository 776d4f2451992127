"""``napari-reg motion``: motion correction of a 4D series, frame by frame.

    napari-reg motion SERIES -o OUTDIR [--reference first|mean|N]
        [--transform rigid|affine|bspline|syn] [--metric ncc|mi|...] [--mask MASK]
        [--smooth-time SIGMA] [--workers N | --scheduler ADDRESS]

Every frame is registered to the reference. OUTDIR receives corrected.nii.gz (the
series on the reference grid, header timing kept), transforms/frame_NNNN.tfm (ITK: maps
REFERENCE physical points to FRAME N physical points; deformable frames are written
in register's ANTs layout: frame_NNNN.tfm/.mat the affine, frame_NNNN_warp.nii.gz the
deformation only, frame_NNNN_inverse_warp.nii.gz, frame_NNNN_whole_map_field.nii.gz
the whole map, used alone), motion.tsv (rotations in degrees,
translations in mm, framewise displacement after Power et al. 2012) and run.json. The set
appears whole or not at all and never replaces an existing file; an interrupted run
resumes when the same command is run again. Exit status: 0 done, 1 bad input or failed
frames, 130 interrupted (143 SIGTERM).
"""

from __future__ import annotations

import argparse
import sys

from ..core.motion import MOTION_TRANSFORMS


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "motion", help="motion-correct a 4D series (frames in parallel, resumable)",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("series", metavar="SERIES", help="the 4D series (NIfTI, MGH, ...)")
    p.add_argument("-o", "--output", required=True,
                   help="output folder (created if needed; no existing file is replaced)")
    p.add_argument("--reference", default="first",
                   help="first (default), mean, or a 0-based frame number")
    p.add_argument("--transform", default="rigid", choices=MOTION_TRANSFORMS,
                   help="model of each frame's map (bspline/syn: cardiac, respiratory)")
    p.add_argument("--metric", default="ncc", choices=("ncc", "mi", "nmi", "ssd", "sad"),
                   help="similarity metric (default ncc: robust to intensity drift)")
    p.add_argument("--mask", help="mask on the series grid: sample only where non-zero")
    p.add_argument("--smooth-time", type=float, default=0.0, metavar="SIGMA",
                   help="smooth the transforms along time (Gaussian sigma in frames; 0 = off)")
    p.add_argument("--fd-threshold", type=float, default=0.5, metavar="MM",
                   help="flag frames whose framewise displacement exceeds this (mm)")
    p.add_argument("--workers", type=int, default=None,
                   help="local worker processes (default: CPU count; 0 = this process)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="run on an existing Dask distributed cluster (workers must see the "
                   "same paths)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..motion import MotionError, MotionSettings, run_motion
    from ..runners import RunnerError

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    n_done = 0

    def on_frame(outcome) -> None:
        nonlocal n_done
        n_done += 1
        extra = f": {outcome.message}" if outcome.message else ""
        log(f"[{outcome.status}] frame {outcome.index} ({n_done} finished, "
            f"{outcome.seconds:.1f} s){extra}")

    try:
        settings = MotionSettings(transform=args.transform, metric=args.metric,
                                  reference=args.reference,
                                  smooth_sigma_frames=args.smooth_time, seed=args.seed)
        report = run_motion(args.series, args.output, settings, args.mask, args.workers,
                            args.scheduler, args.fd_threshold, callback=on_frame)
    except KeyboardInterrupt:
        log("\nnapari-reg motion: interrupted before the frames started")
        return 130
    except (MotionError, RunnerError, OSError) as exc:
        log(f"napari-reg motion: error: {exc}")
        return 1
    for note in report.notes:
        log(f"napari-reg motion: note: {note}")
    if report.ok:
        log(f"napari-reg motion: {len(report.outcomes)} frames corrected into "
            f"{report.output_dir} ({report.runner}, {report.seconds:.1f} s)")
        return 0
    if report.interrupted:
        log("napari-reg motion: interrupted; run the same command again to resume "
            f"({report.count('done') + report.count('already done')} frames kept)")
        return 130
    failed = [o for o in report.outcomes if o.status == "failed"]
    log(f"napari-reg motion: {len(failed)} frame(s) failed; nothing was written to "
        f"{args.output} (finished frames are kept for a re-run)")
    return 1
