"""Run the hostile corpus against the command line and count what went wrong.

    PYTHONPATH=src python benchmarks/bench_hostile.py [--quick] [--out DIR]

Per case: crash (an exception escaped ``main`` or the process died of a signal it did not
handle), traceback (``Traceback`` in stderr), multi-line error (more than one line of
error text), partial output (a failed run left files; a finished one lacks some), changed
input (an input file's bytes changed), freeze (a case over 60 s). Also: kills (SIGKILL,
SIGTERM) at every rename of ``register``'s write phase, a read-only output folder, a full
disk (a 200 kB tmpfs, when mounting is permitted), and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hostile_corpus as corpus  # noqa: E402

FAST = ["--levels", "1", "--iterations", "8", "-q"]
FREEZE_S = 60.0


@dataclass
class Tally:
    cases: int = 0
    refused: int = 0
    crashes: list[str] = field(default_factory=list)
    tracebacks: list[str] = field(default_factory=list)
    multiline: list[str] = field(default_factory=list)
    partial: list[str] = field(default_factory=list)
    changed_inputs: list[str] = field(default_factory=list)
    freezes: list[str] = field(default_factory=list)
    # SIGKILL in the middle of a commit into an EXISTING folder: complete files without
    # run.json (so not a finished set) until the next run rolls the journal forward.
    uncommitted: list[str] = field(default_factory=list)

    def problems(self) -> int:
        return sum(len(v) for v in (self.crashes, self.tracebacks, self.multiline,
                                    self.partial, self.changed_inputs, self.freezes))

    def summary(self) -> str:
        return (f"{self.cases} cases ({self.refused} refused with a message): "
                f"{len(self.crashes)} crashes, {len(self.tracebacks)} tracebacks, "
                f"{len(self.multiline)} multi-line errors, {len(self.partial)} partial "
                f"outputs, {len(self.changed_inputs)} changed inputs, {len(self.freezes)} "
                f"freezes; {len(self.uncommitted)} SIGKILLs mid-commit left complete files "
                "without run.json until the next run")


def _digest(paths) -> dict[str, str]:
    out = {}
    for p in paths:
        p = Path(p)
        with contextlib.suppress(OSError):
            out[str(p)] = hashlib.sha1(p.read_bytes()).hexdigest()
    return out


def _files(folder: Path) -> set[str]:
    if not folder.exists():
        return set()
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def run_case(tally: Tally, label: str, argv: list[str], inputs: list, out: Path,
             expected: set[str] | None = None) -> tuple[int, str]:
    """Run ``napari-reg argv`` in this process; record every problem under ``label``.

    ``out`` is the folder (or, for apply, the file) written; ``expected`` the complete
    output set for a finished run (None: any non-empty set).
    """
    from napari_reg.cli import main

    tally.cases += 1
    before = _digest(inputs)
    err = io.StringIO()
    t0 = time.monotonic()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
    except SystemExit as exc:  # argparse usage errors
        code = exc.code if isinstance(exc.code, int) else 2
    except BaseException as exc:  # noqa: BLE001 - what we count
        tally.crashes.append(f"{label}: {type(exc).__name__}: {exc}")
        code = -1
    if time.monotonic() - t0 > FREEZE_S:
        tally.freezes.append(f"{label}: {time.monotonic() - t0:.0f} s")
    text = err.getvalue()
    if "Traceback" in text:
        tally.tracebacks.append(f"{label}: {text.strip().splitlines()[-1]}")
    errors = [ln for ln in text.splitlines() if ln.strip() and "warning" not in ln]
    if code not in (0, -1):
        tally.refused += 1
        if len(errors) > 1:
            tally.multiline.append(f"{label}: {text.strip()!r}")
    written = _files(out) if out.suffix == "" else ({out.name} if out.exists() else set())
    leftovers = [n for n in written if ".napari-reg-" in n]
    if code != 0 and (written - {"batch_summary.tsv", "batch_summary.json"}):
        tally.partial.append(f"{label}: failed (exit {code}) but left {sorted(written)}")
    elif code == 0 and expected is not None and not expected <= written:
        tally.partial.append(f"{label}: finished without {sorted(expected - written)}")
    elif leftovers:
        tally.partial.append(f"{label}: left {leftovers}")
    if _digest(inputs) != before:
        tally.changed_inputs.append(label)
    return code, text


def volume_cases(tally: Tally, work: Path, quick: bool, seed: int) -> None:
    fixed, moving = corpus.good_pair(work / "good")
    identity = work / "identity.tfm"
    identity.write_text("#Insight Transform File V1.0\n#Transform 0\n"
                        "Transform: AffineTransform_double_3_3\n"
                        "Parameters: 1 0 0 0 1 0 0 0 1 0 0 0\nFixedParameters: 0 0 0\n")
    files = corpus.volume_corpus(work / "volumes", seed=seed, per_field=1 if quick else 2)
    if quick:
        files = files[::4]
    for k, f in enumerate(files):
        out = work / "out" / f"vol{k}"
        run_case(tally, f"register {f.what} as fixed",
                 ["register", str(f.path), str(moving), "-o", str(out), *FAST],
                 [f.path, moving], out)
        run_case(tally, f"apply {f.what} as input",
                 ["apply", str(identity), "--reference", str(fixed), "--input", str(f.path),
                  "-o", str(out / "applied.nii.gz")], [f.path, fixed, identity],
                 out / "applied.nii.gz")


def transform_cases(tally: Tally, work: Path, seed: int) -> None:
    fixed, moving = corpus.good_pair(work / "good")
    for k, f in enumerate(corpus.transform_corpus(work / "transforms", seed)):
        out = work / "out" / f"tfm{k}"
        run_case(tally, f"register --initial {f.what}",
                 ["register", str(fixed), str(moving), "--initial", str(f.path),
                  "-o", str(out), *FAST], [fixed, moving, f.path], out)
        run_case(tally, f"apply {f.what}",
                 ["apply", str(f.path), "--reference", str(fixed), "--input", str(moving),
                  "-o", str(out / "applied.nii.gz")], [fixed, moving, f.path],
                 out / "applied.nii.gz")
    for k, f in enumerate(corpus.field_corpus(work / "fields", seed)):
        out = work / "out" / f"field{k}"
        run_case(tally, f"apply field {f.what}",
                 ["apply", str(f.path), "--reference", str(fixed), "--input", str(moving),
                  "-o", str(out / "applied.nii.gz")], [fixed, moving, f.path],
                 out / "applied.nii.gz")
    for k, f in enumerate(corpus.record_corpus(work / "records", fixed, moving)):
        out = work / "out" / f"rec{k}"
        run_case(tally, f"register --replay {f.what}",
                 ["register", "--replay", str(f.path), "-o", str(out), "-q"],
                 [fixed, moving, f.path], out)
    loop = work / "loop.nii.gz"
    with contextlib.suppress(FileNotFoundError):
        loop.unlink()
    os.symlink(loop, loop)
    run_case(tally, "apply symlink loop as input",
             ["apply", str(work / "identity.tfm"), "--reference", str(fixed), "--input",
              str(loop), "-o", str(work / "out" / "loop" / "a.nii.gz")], [fixed],
             work / "out" / "loop" / "a.nii.gz")


def landmark_cases(tally: Tally, work: Path, seed: int) -> None:
    fixed, moving = corpus.good_pair(work / "good")
    for k, (f, good) in enumerate(corpus.landmark_corpus(work / "landmarks", seed)):
        out = work / "out" / f"lm{k}"
        run_case(tally, f"register --landmarks {f.what}",
                 ["register", str(fixed), str(moving), "--landmarks", str(f.path), str(good),
                  "-o", str(out), *FAST], [fixed, moving, f.path, good], out)


def overwrite_cases(tally: Tally, work: Path) -> None:
    """The input-overwriting command lines of issue 14."""
    fixed, moving = corpus.good_pair(work / "good")
    atlas = work / "atlas"
    atlas.mkdir(exist_ok=True)
    shutil.copy(moving, atlas / "image.nii.gz")
    shutil.copy(moving, atlas / "labels.nii.gz")
    seg = ["--levels", "1", "--fusion", "majority"]
    run_case(tally, "segment -o ATLAS_FOLDER",
             ["segment", str(fixed), "--atlas", str(atlas / "image.nii.gz"),
              str(atlas / "labels.nii.gz"), "-o", str(atlas), *seg],
             [fixed, atlas / "image.nii.gz", atlas / "labels.nii.gz"], work / "out" / "none")
    out = work / "out" / "seg"
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(fixed, out / "confidence.nii.gz")
    run_case(tally, "segment OUT/confidence.nii.gz -o OUT",
             ["segment", str(out / "confidence.nii.gz"), "--atlas", str(atlas / "image.nii.gz"),
              str(atlas / "labels.nii.gz"), "-o", str(out), *seg],
             [out / "confidence.nii.gz", atlas / "image.nii.gz"], work / "out" / "none")
    tout = work / "out" / "tmpl"
    tout.mkdir(parents=True, exist_ok=True)
    shutil.copy(moving, tout / "template.nii.gz")
    run_case(tally, "template G OUT/template.nii.gz -o OUT",
             ["template", str(fixed), str(tout / "template.nii.gz"), "-o", str(tout),
              "--template-iterations", "1", "--levels", "1", "--workers", "0"],
             [fixed, tout / "template.nii.gz"], work / "out" / "none")
    run_case(tally, "register -o FIXED_FILE",
             ["register", str(fixed), str(moving), "-o", str(fixed), *FAST], [fixed, moving],
             work / "out" / "none")
    run_case(tally, "apply -o INPUT",
             ["apply", str(work / "identity.tfm"), "--reference", str(fixed), "--input",
              str(moving), "-o", str(moving), "--overwrite"], [fixed, moving],
             work / "out" / "none")


def _cli(argv: list[str], env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "napari_reg.cli", *argv], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=300, **kw)


def kill_cases(tally: Tally, work: Path) -> None:
    """SIGKILL / SIGTERM at each rename of register's commit, into a new and an existing
    folder: the set is whole or absent, and the next run leaves nothing behind."""
    fixed, moving = corpus.good_pair(work / "good")
    expected = {"transform.tfm", "warped.nii.gz", "run.json"}
    for sig in ("KILL", "TERM"):
        # a new folder; a folder holding an older result only; one with a user file too
        for where, renames in (("new", 1), ("older result", 2), ("user file", 3)):
            for n in range(1, renames + 1):
                tally.cases += 1
                out = work / "out" / f"kill_{sig}_{where.replace(' ', '_')}_{n}"
                if where != "new":
                    done = _cli(["register", str(fixed), str(moving), "-o", str(out), *FAST])
                    assert done.returncode == 0, done.stderr
                if where == "user file":
                    (out / "notes.txt").write_text("user file\n")
                proc = _cli(["register", str(fixed), str(moving), "-o", str(out), *FAST,
                             "--overwrite", "--seed", "1"],
                            env={"NAPARI_REG_FAULT": f"rename:{n}:{sig}"})
                label = f"SIG{sig} at rename {n} ({where} folder)"
                if "Traceback" in proc.stderr:
                    tally.tracebacks.append(label)
                if proc.returncode == 0:
                    tally.crashes.append(f"{label}: exit 0 after the signal")
                files = _files(out) - {"notes.txt"}
                visible = {f for f in files if ".napari-reg-" not in f}
                if "run.json" in visible and not expected <= visible:
                    tally.partial.append(f"{label}: {sorted(visible)}")
                if visible and "run.json" not in visible:
                    journal = list(out.glob(".napari-reg-*/.commit.json"))
                    (tally.uncommitted if journal and sig == "KILL" else tally.partial).append(
                        f"{label}: {sorted(visible)} without run.json")
                # The next run in the same place must finish and leave no staging behind.
                again = _cli(["register", str(fixed), str(moving), "-o", str(out), *FAST,
                              "--overwrite"])
                left = [p.name for p in [*out.parent.iterdir(), *(
                    out.iterdir() if out.exists() else [])] if ".napari-reg-" in p.name]
                if again.returncode != 0 or left or not expected <= _files(out):
                    tally.partial.append(f"{label}, then a new run: exit {again.returncode}, "
                                         f"left {left}")
                if where == "user file" and not (out / "notes.txt").exists():
                    tally.changed_inputs.append(f"{label}: the user's file is gone")


def disk_cases(tally: Tally, work: Path) -> str:
    """Read-only output folder; full disk (tmpfs of 200 kB) when mounting is allowed."""
    fixed, moving = corpus.good_pair(work / "good")
    note = ""
    ro = work / "readonly"
    ro.mkdir(exist_ok=True)
    ro.chmod(0o555)
    if os.geteuid() == 0:  # permissions do not bind root: a read-only mount does
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=100k", "tmpfs", str(ro)],
                          capture_output=True).returncode == 0:
            note += "read-only folder: a read-only tmpfs; "
        else:
            note += "read-only folder: root and no mount, so not really read-only; "
    run_case(tally, "register into a read-only folder",
             ["register", str(fixed), str(moving), "-o", str(ro / "out"), *FAST],
             [fixed, moving], ro / "out")
    subprocess.run(["umount", str(ro)], capture_output=True)
    mount = work / "tiny"
    mount.mkdir(exist_ok=True)
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mount)],
                        capture_output=True).returncode == 0
    if not ok:
        return note + "full disk: skipped (mount not permitted)"
    try:
        (mount / "filler").write_bytes(b"\0" * 150_000)
        run_case(tally, "register onto a full disk",
                 ["register", str(fixed), str(moving), "-o", str(mount / "out"), *FAST],
                 [fixed, moving], mount / "out")
        run_case(tally, "apply onto a full disk",
                 ["apply", str(work / "identity.tfm"), "--reference", str(fixed), "--input",
                  str(moving), "-o", str(mount / "a.nii.gz")], [fixed, moving],
                 mount / "a.nii.gz")
        left = [p.name for p in mount.iterdir() if ".napari-reg-" in p.name]
        if left:
            tally.partial.append(f"full disk: left {left}")
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)
    return note + "full disk: 200 kB tmpfs"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a quarter of the volumes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: temp)")
    args = parser.parse_args()
    work = args.out or Path(tempfile.mkdtemp(prefix="hostile-"))
    work.mkdir(parents=True, exist_ok=True)
    tally = Tally()
    t0 = time.monotonic()
    volume_cases(tally, work, args.quick, args.seed)
    print(f"volumes: {tally.summary()}", flush=True)
    transform_cases(tally, work, args.seed)
    landmark_cases(tally, work, args.seed)
    overwrite_cases(tally, work)
    print(f"+ transforms, fields, landmarks, overwrites: {tally.summary()}", flush=True)
    kill_cases(tally, work)
    note = disk_cases(tally, work)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"all: {tally.summary()} ({note})")
    print(f"peak RSS: {peak_mb:.0f} MB in-process runs, {child_mb:.0f} MB largest subprocess; "
          f"{time.monotonic() - t0:.0f} s")
    for name in ("crashes", "tracebacks", "multiline", "partial", "changed_inputs", "freezes",
                 "uncommitted"):
        for line in getattr(tally, name):
            print(f"  {name}: {line}")
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return 1 if tally.problems() else 0


if __name__ == "__main__":
    sys.exit(main())
