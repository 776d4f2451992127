"""Batch registration: many moving images to one fixed image (or to a built template).

Each pair is one :class:`napari_reg.job.Job` run by :func:`napari_reg.job.run_job` into its
own folder ``OUTPUT/<pair name>/`` (``transform.tfm`` maps FIXED world points to MOVING
world points; ``warped.nii.gz`` is the moving image on the fixed grid; ``run.json`` the
record). ``run_job`` writes through a staging folder and ``run.json`` is moved in last, so

* a pair is **finished** exactly when its ``run.json`` and every other output of its job
  exist: a re-run (after a crash, Ctrl-C, a lost cluster) skips finished pairs and
  redoes only the others;
* a pair whose folder holds outputs but no ``run.json`` was interrupted mid-move: its
  leftovers are replaced;
* one failed pair is reported and the others go on (and is tried again by the next
  run); a summary table (also written as ``batch_summary.tsv`` and ``.json``) ends every
  run;
* a finished pair is recognised by its fixed and moving paths only: after changing the
  registration parameters, write to a new output folder.

Where pairs run: local worker processes (``concurrent.futures.ProcessPoolExecutor``,
default), this process (``workers=0``, for debugging), or an existing Dask distributed
cluster (``scheduler="tcp://host:8786"`` or a ``distributed`` cluster object; needs the
optional ``distributed`` package, and every worker must see the same file paths); the
runners themselves live in :mod:`napari_reg.runners`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .io.atomic import atomic_path
from .io.output_set import check_output_plan, clean_stale
from .io.volumes import volume_name
from .job import OUTPUT_NAMES, Job, run_job
from .runners import RunnerError, as_completed, connect, executor_mapper, runner

__all__ = ["BatchError", "BatchPair", "PairOutcome", "BatchReport", "read_list", "plan_pairs",
           "run_pair", "run_batch", "connect", "executor_mapper"]

RECORD = OUTPUT_NAMES["record"]
_OWNED_STAGING = re.compile(r"^\.napari-reg-\d+-[0-9a-f]{8}-")
STATUSES = ("done", "already done", "failed", "not run")


# A batch that cannot start (missing fixed image, unreachable scheduler, ...): the
# runners' error, so that one ``except`` covers both.
BatchError = RunnerError


@dataclass
class BatchPair:
    """One moving image of the batch, its job and its own output folder."""

    name: str
    job: Job
    output_dir: Path


@dataclass
class PairOutcome:
    """What happened to one pair: ``status`` is one of :data:`STATUSES`."""

    name: str
    status: str
    seconds: float = 0.0
    final_cost: float | None = None
    message: str = ""
    output_dir: str = ""
    cpu_seconds: float = 0.0  # CPU time of the worker (all threads): wall >> cpu = contention


@dataclass
class BatchReport:
    """All pair outcomes (plan order), where they ran, and whether the run was cut short."""

    outcomes: list[PairOutcome]
    runner: str
    seconds: float
    interrupted: bool = False

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def ok(self) -> bool:
        """True when every pair is finished (now or earlier)."""
        return all(o.status in ("done", "already done") for o in self.outcomes)

    def table(self) -> str:
        rows = [["pair", "status", "seconds", "cost", "message"]]
        for o in self.outcomes:
            cost = "" if o.final_cost is None else f"{o.final_cost:.5g}"
            rows.append([o.name, o.status, f"{o.seconds:.1f}", cost, o.message])
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4]
                 for r in rows]
        counts = ", ".join(f"{self.count(s)} {s}" for s in STATUSES if self.count(s))
        lines.append(f"{len(self.outcomes)} pairs: {counts} ({self.runner}, "
                     f"{self.seconds:.1f} s{', interrupted' if self.interrupted else ''})")
        return "\n".join(line.rstrip() for line in lines)


# ------------------------------------------------------------------------ planning
def read_list(path: str | os.PathLike) -> list[str]:
    """Image paths from a text file: one per line; blank lines and ``#`` comments skipped.

    Relative paths are taken relative to the list file's folder.
    """
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise BatchError(f"cannot read the batch list {path}: {exc}") from exc
    base = Path(path).resolve().parent
    entries = [line.split("#", 1)[0].strip() for line in lines]
    return [str(p if Path(p).is_absolute() else base / p) for p in entries if p]


def plan_pairs(fixed: str | os.PathLike, movings: Sequence[str | os.PathLike],
               output_root: str | os.PathLike, parameters: dict[str, Any] | None = None,
               fixed_mask: str | None = None,
               reserved: Sequence[str] = ()) -> list[BatchPair]:
    """One pair per moving image, each with its own folder named after the image.

    ``reserved``: folder names already taken in ``output_root`` (e.g. ``template``).
    A missing fixed image stops the batch here; a missing moving image becomes a failed
    pair at run time (the others still run).
    """
    if not Path(fixed).is_file():
        raise BatchError(f"fixed image not found: {fixed}")
    if fixed_mask and not Path(fixed_mask).is_file():
        raise BatchError(f"fixed mask not found: {fixed_mask}")
    if not movings:
        raise BatchError("no moving image given")
    root = Path(output_root)
    pairs, used = [], set(reserved)
    for moving in movings:
        name = volume_name(moving) or "image"
        unique, k = name, 2
        while unique in used:
            unique, k = f"{name}_{k}", k + 1
        used.add(unique)
        job = Job(fixed=str(Path(fixed).resolve()), moving=str(Path(moving).resolve()),
                  parameters=dict(parameters or {}),
                  fixed_mask=str(Path(fixed_mask).resolve()) if fixed_mask else None)
        pairs.append(BatchPair(unique, job, root / unique))
    # No pair's output may replace any image of the batch (not only its own pair's).
    check_output_plan([p.output_dir / name for p in pairs for name in _expected_outputs(p.job)],
                      [fixed, fixed_mask, *movings], overwrite=True)
    return pairs


def _finished(pair: BatchPair) -> PairOutcome | None:
    """The outcome of an earlier run of this pair, if its record is there."""
    record_path = pair.output_dir / RECORD
    if not record_path.is_file():
        return None
    try:
        record = json.loads(record_path.read_text())
        job = record["job"]
        cost = record.get("result", {}).get("final_cost")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return PairOutcome(pair.name, "failed", message=f"unreadable {record_path}: {exc}; "
                           "delete the folder to redo this pair", output_dir=str(pair.output_dir))
    if Path(job.get("moving", "")).resolve() != Path(pair.job.moving).resolve() or \
            Path(job.get("fixed", "")).resolve() != Path(pair.job.fixed).resolve():
        return PairOutcome(pair.name, "failed", message=f"{pair.output_dir} holds the result of "
                           f"another pair ({job.get('moving')} to {job.get('fixed')}); use "
                           "another output folder", output_dir=str(pair.output_dir))
    missing = [name for name in _expected_outputs(pair.job)
               if not (pair.output_dir / name).is_file()]
    if missing:  # moved in before the others by an interrupted run: not finished
        return None
    return PairOutcome(pair.name, "already done", final_cost=cost,
                       output_dir=str(pair.output_dir))


def _expected_outputs(job: Job) -> list[str]:
    """The files a finished pair has (deformable runs add the field and its Jacobian)."""
    from .core.engine.presets import DEFORMABLE_MODELS
    from .job import DEFORMABLE_OUTPUT_NAMES

    names = list(OUTPUT_NAMES.values())
    stages = job.parameters.get("stages") or [job.parameters.get("transform", "affine")]
    if str(stages[-1]).lower() in DEFORMABLE_MODELS:
        names += list(DEFORMABLE_OUTPUT_NAMES.values())
    return names


def run_pair(job: Job, output_dir: str | os.PathLike, name: str = "") -> PairOutcome:
    """Run one pair (in whatever process this is called); errors become the outcome.

    Leftovers of an interrupted earlier attempt (outputs without ``run.json``, staging
    folders) are replaced. Module-level so that process pools and Dask can ship it.
    """
    output_dir = Path(output_dir)
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        for leftover in output_dir.glob(".napari-reg-*"):
            if not _OWNED_STAGING.match(leftover.name):  # an older release's staging
                shutil.rmtree(leftover, ignore_errors=True)
        clean_stale(output_dir)  # this release's: only those whose process is gone
        paths = run_job(job, output_dir, overwrite=True)
        record = json.loads(paths["record"].read_text())
        cost = record.get("result", {}).get("final_cost")
        return PairOutcome(name, "done", time.perf_counter() - t0, cost,
                           output_dir=str(output_dir), cpu_seconds=time.process_time() - c0)
    except Exception as exc:  # noqa: BLE001 - any failure is this pair's, the batch goes on
        return PairOutcome(name, "failed", time.perf_counter() - t0,
                           message=f"{type(exc).__name__}: {exc}", output_dir=str(output_dir))


def _run_pair_args(args: tuple[Job, str, str]) -> PairOutcome:
    return run_pair(*args)


# ------------------------------------------------------------------------ running
def run_batch(pairs: Sequence[BatchPair], workers: int | None = None, scheduler: Any = None,
              callback: Callable[[PairOutcome], None] | None = None,
              summary_dir: str | os.PathLike | None = None,
              connect_timeout_s: float = 10.0) -> BatchReport:
    """Run every unfinished pair; return (and optionally write) the summary.

    ``workers``: local processes (default: CPU count; 0 = this process). ``scheduler``: a
    Dask scheduler address or cluster (then ``workers`` is ignored; an unreachable one
    raises :class:`BatchError` after ``connect_timeout_s``). ``callback`` receives
    each :class:`PairOutcome` as it arrives (already finished pairs first). Ctrl-C stops
    the batch: finished pairs are kept, the rest are reported "not run".
    """
    t0 = time.perf_counter()
    outcomes: dict[int, PairOutcome] = {}

    def record(index: int, outcome: PairOutcome) -> None:
        outcomes[index] = outcome
        if callback is not None:
            callback(outcome)

    todo = []
    for index, pair in enumerate(pairs):
        earlier = _finished(pair)
        missing = [p for p in pair.job.inputs() if not Path(p).is_file()]
        if earlier is not None:
            record(index, earlier)
        elif missing:
            record(index, PairOutcome(pair.name, "failed", message="input file not found: "
                                      + ", ".join(missing), output_dir=str(pair.output_dir)))
        else:
            todo.append(index)
    interrupted = False
    description = "nothing to run"
    if todo and workers == 0 and scheduler is None:
        description = "in-process"
        try:
            for index in todo:
                pair = pairs[index]
                record(index, run_pair(pair.job, pair.output_dir, pair.name))
        except KeyboardInterrupt:
            interrupted = True
    elif todo:
        with runner(workers, scheduler, connect_timeout_s) as (description, submit):
            futures: dict[Any, int] = {}
            try:
                for index in todo:
                    pair = pairs[index]
                    futures[submit(_run_pair_args, (pair.job, str(pair.output_dir),
                                                    pair.name))] = index
                for future in as_completed(futures):
                    index = futures[future]
                    record(index, _collect(future, pairs[index]))
            except KeyboardInterrupt:
                interrupted = True
                for future in futures:
                    future.cancel()
            except BrokenProcessPool as exc:
                interrupted = True
                description += f" (a worker process died: {exc})"
    for index, pair in enumerate(pairs):
        if index not in outcomes:
            outcomes[index] = PairOutcome(pair.name, "not run", message="batch stopped before "
                                          "this pair finished; run again to resume",
                                          output_dir=str(pair.output_dir))
    report = BatchReport([outcomes[i] for i in range(len(pairs))], description,
                         time.perf_counter() - t0, interrupted)
    if summary_dir is not None:
        write_summary(report, summary_dir)
    return report


def _collect(future: Any, pair: BatchPair) -> PairOutcome:
    try:
        return future.result()
    except BrokenProcessPool:
        raise
    except Exception as exc:  # noqa: BLE001 - a worker-side crash is this pair's failure
        return PairOutcome(pair.name, "failed", message=f"{type(exc).__name__}: {exc}",
                           output_dir=str(pair.output_dir))


def write_summary(report: BatchReport, directory: str | os.PathLike) -> Path:
    """``batch_summary.tsv`` and ``batch_summary.json`` in ``directory`` (atomic)."""
    directory = Path(directory)
    with atomic_path(directory / "batch_summary.json") as tmp:
        tmp.write_text(json.dumps({"runner": report.runner, "seconds": report.seconds,
                                   "interrupted": report.interrupted,
                                   "pairs": [asdict(o) for o in report.outcomes]}, indent=2))
    with atomic_path(directory / "batch_summary.tsv") as tmp:
        lines = ["pair\tstatus\tseconds\tfinal_cost\toutput_dir\tmessage"]
        lines += [f"{o.name}\t{o.status}\t{o.seconds:.2f}\t"
                  f"{'' if o.final_cost is None else o.final_cost}\t{o.output_dir}\t"
                  f"{o.message}" for o in report.outcomes]
        tmp.write_text("\n".join(lines) + "\n")
    return directory / "batch_summary.tsv"
