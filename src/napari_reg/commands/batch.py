"""``napari-reg batch``: register many images to one fixed image, or to a built template.

    napari-reg batch --fixed FIXED MOVING... -o OUTDIR [--workers N | --scheduler ADDRESS]
    napari-reg batch --to-template IMAGE... -o OUTDIR

Every pair gets OUTDIR/<moving name>/ with transform.tfm (maps FIXED physical points to
MOVING points), warped.nii.gz and run.json. Running the same command again resumes: pairs
with a run.json are not redone. A summary table is printed and written to
OUTDIR/batch_summary.tsv (and .json). Exit status: 0 all pairs finished, 1 some failed,
130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .template import add_template_options, template_options


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "batch", help="register many moving images to one fixed image (or a template), "
        "in parallel, resumable",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("movings", nargs="*", metavar="MOVING", help="moving images")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--fixed", help="the fixed (reference) image of every pair")
    target.add_argument("--to-template", action="store_true",
                        help="build a template from the images (OUTDIR/template/) and "
                        "register every image to it")
    p.add_argument("--list", help="text file with one moving image path per line")
    p.add_argument("-o", "--output", required=True, help="output folder (one sub-folder per pair)")
    p.add_argument("--fixed-mask", help="mask on the fixed image (sample only where non-zero)")
    p.add_argument("--workers", type=int, default=None,
                   help="local worker processes (default: CPU count; 0 = this process)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="run on an existing Dask distributed cluster (needs the 'distributed' "
                   "package; workers must see the same paths)")
    reg = p.add_argument_group("registration of each pair (also --transform, --metric, "
                               "--levels below)")
    reg.add_argument("--iterations", type=int, nargs="+", help="iterations per level")
    reg.add_argument("--samples", type=int, nargs="+", help="sample points per level")
    reg.add_argument("--seed", type=int, default=0)
    add_template_options(p)
    p.set_defaults(func=run)


def _parameters(args: argparse.Namespace) -> dict:
    params = {"transform": args.transform, "metric": args.metric,
              "levels": args.levels, "seed": args.seed}
    for key in ("iterations", "samples"):
        if getattr(args, key):
            params[key] = getattr(args, key)
    return params


def _check_contrast(fixed: str, movings: list[str], metric: str, log) -> None:
    """Warn (once, on the first readable moving image) when an intensity metric meets
    another contrast: batches usually hold one modality, and loading every image twice
    would cost more than it tells."""
    from ..core.atlas.labels import modality_check
    from ..core.initialize import init_center_of_mass
    from ..io.volumes import load_volume

    first = next((m for m in movings if Path(m).is_file()), None)
    if first is None or metric not in ("ssd", "sad", "ncc"):
        return
    try:
        f, m = load_volume(fixed), load_volume(first)
    except (ValueError, OSError):
        return  # the pair itself will report the unreadable file
    note = modality_check(f, m, metric, transform=init_center_of_mass(f, m), warn=False)
    if note:
        log(f"napari-reg batch: warning: {note}")


def run(args: argparse.Namespace) -> int:
    from ..batch import BatchError, plan_pairs, read_list, run_batch
    from .template import build_template_files

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    movings = list(args.movings) + (read_list(args.list) if args.list else [])
    try:
        fixed = args.fixed
        if args.to_template:
            present = [m for m in movings if Path(m).is_file()]
            if len(present) < len(movings):
                log("napari-reg batch: missing images left out of the template: "
                    + ", ".join(m for m in movings if m not in present))
            fixed = str(build_template_files(present, f"{args.output}/template",
                                             template_options(args), args.workers,
                                             args.scheduler, log=log))
        pairs = plan_pairs(fixed, movings, args.output, _parameters(args), args.fixed_mask,
                           reserved=("template",) if args.to_template else ())
        _check_contrast(fixed, movings, args.metric, log)
    except KeyboardInterrupt:
        log("\nnapari-reg batch: interrupted while building the template")
        return 130
    except (ValueError, OSError) as exc:
        log(f"napari-reg batch: error: {exc}")
        return 1

    def on_outcome(outcome) -> None:
        extra = f": {outcome.message}" if outcome.message else ""
        log(f"[{outcome.status}] {outcome.name} ({outcome.seconds:.1f} s){extra}")

    try:
        report = run_batch(pairs, workers=args.workers, scheduler=args.scheduler,
                           callback=on_outcome, summary_dir=args.output)
    except BatchError as exc:
        log(f"napari-reg batch: error: {exc}")
        return 1
    print(report.table())
    if report.interrupted:
        return 130
    return 0 if report.ok else 1
