"""A set of output files that appears whole or not at all, and never replaces an input.

Every command that writes results (``register``, ``apply``, ``segment``, ``template``,
``batch``, ``motion`` ...) goes through :class:`OutputSet`::

    plan = OutputSet(out_dir, inputs=[fixed, moving], overwrite=False, marker="run.json",
                     planned=["transform.tfm", "warped.nii.gz", "run.json"])  # checks now
    ...compute...
    with plan as outputs:                     # a staging folder
        save_volume(warped, outputs.path("warped.nii.gz"))
        ...                                   # on success: commit; on error: discard

The rules live here, in one place:

* **No input is overwritten** and **no two outputs share a name**: every target is
  compared (resolved, and by inode) with every input and with the other targets, both
  when the set is planned (before any work) and when each file is staged.
* **Whole or nothing**: files are written into a staging folder named
  ``.napari-reg-<pid>-<host>-*``. A new output folder is created by ONE rename of the
  staging folder; a folder that holds only an older result of the same set is replaced
  by two (old folder aside, new one in: a kill between leaves no folder, never a mixed
  one). Into a folder with other files the outputs are moved one by one under a journal
  (``.commit.json`` in the staging folder, written once every file is complete); the
  ``marker`` file (e.g. ``run.json``), whose presence means "this set is complete", is
  removed first and moved in last, and the next run finishes an interrupted journal.
  SIGINT/SIGTERM are held back during the commit.
* **Nothing is left behind**: a staging folder or temporary file whose process is gone
  (e.g. after SIGKILL) is removed by the next :class:`OutputSet` in that folder, and an
  interrupted journal commit is finished (rolled forward: its files were complete).

Fault injection for tests: ``NAPARI_REG_FAULT=rename:N[:SIG]`` sends the process ``SIG``
(``KILL`` by default, or ``TERM``/``INT``) just before the N-th rename of a commit
(1-based).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from napari_reg.io.atomic import STAGING_PREFIX, current_umask, host_tag, staging_prefix

from ..core.errors import NapariRegError

__all__ = ["OutputSet", "OutputSetError", "STAGING_PREFIX", "check_output_plan",
           "clean_stale", "deferred_signals", "interrupted_outputs_note", "staging_prefix"]

_JOURNAL = ".commit.json"
_OWNER_RE = re.compile(r"^\.napari-reg-(\d+)-([0-9a-f]{8})-")
# Leftovers of another machine (shared file systems) are only removed once this old.
_FOREIGN_STALE_S = 24 * 3600.0


class OutputSetError(NapariRegError):
    """An output set that must not be written (it would replace an input, ...)."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_stale(entry: Path) -> bool:
    match = _OWNER_RE.match(entry.name)
    if match is None:
        return False  # not ours (or an older format): never touched
    pid, host = int(match.group(1)), match.group(2)
    if host == host_tag():
        return pid != os.getpid() and not _alive(pid)
    try:
        return time.time() - entry.lstat().st_mtime > _FOREIGN_STALE_S
    except OSError:
        return False


def clean_stale(folder: str | os.PathLike) -> list[Path]:
    """Remove stale staging folders / temporary files in ``folder``; finish their commits.

    Returns what was removed. Errors (permissions, a read-only disk) are ignored: cleaning
    is best effort and never stops a run.
    """
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = [e for e in folder.iterdir() if e.name.startswith(STAGING_PREFIX)]
    except OSError:
        return removed
    for entry in entries:
        if not _is_stale(entry):
            continue
        with contextlib.suppress(OSError, ValueError):
            if entry.is_dir() and not entry.is_symlink():
                if (entry / _JOURNAL).is_file():
                    _roll_forward(entry)
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
    return removed


def _roll_forward(staging: Path) -> None:
    """Finish a commit that a killed process started (its files were all complete)."""
    journal = json.loads((staging / _JOURNAL).read_text())
    folder = Path(journal["folder"])
    home = staging.parent.resolve()
    if home not in (folder.resolve(), folder.resolve().parent):
        return  # a journal that does not describe its own folder (or a sibling): distrust
    for rel in journal["files"]:
        source = staging / rel
        if source.exists():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, folder / rel)


# Output sets committed while an interrupt waited for the commit to finish: the interrupt
# message must not say "no outputs written" about them (see interrupted_outputs_note).
_KEPT: list[Path] = []


def interrupted_outputs_note() -> str:
    """The end of an interrupt message: "no outputs written", or which sets are kept."""
    if not _KEPT:
        return "no outputs written"
    kept = ", ".join(str(p) for p in _KEPT)
    _KEPT.clear()
    return f"the outputs in {kept} were complete before the signal and are kept"


@contextlib.contextmanager
def deferred_signals() -> Iterator[list[int]]:
    """Hold SIGINT/SIGTERM back (main thread only) and deliver them after the block;
    the block sees the list of signals waiting."""
    pending: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield pending
        return
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, lambda signum, _frame: pending.append(signum))
    try:
        yield pending
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in pending:
            signal.raise_signal(sig)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or os.path.samefile(a, b)
    except (OSError, RuntimeError):
        return False


def check_output_plan(targets: Iterable[str | os.PathLike], inputs: Iterable[str | os.PathLike],
                      overwrite: bool = False) -> None:
    """Refuse a set of output paths that would replace an input, repeat a name, or
    replace an existing file without ``overwrite``. One rule for every command."""
    seen: dict[str, Path] = {}
    inputs = [Path(p) for p in inputs if p]
    for target in (Path(t) for t in targets):
        try:
            key = os.path.normcase(os.fspath(target.parent.resolve() / target.name))
        except (OSError, RuntimeError) as exc:
            raise OutputSetError(f"{target}: unusable output path ({exc})") from None
        if key in seen:
            raise OutputSetError(f"two outputs would share the name {target}; give the "
                                 "inputs distinct names or use separate output folders")
        seen[key] = target
        for source in inputs:
            if _same_file(target, source) or os.path.normcase(
                    os.path.abspath(target)) == os.path.normcase(os.path.abspath(source)):
                raise OutputSetError(f"refusing to overwrite the input file {source} "
                                     f"(it is also the output {target})")
        if target.is_dir():
            raise OutputSetError(f"output {target} is a folder")
        if (target.exists() or target.is_symlink()) and not overwrite:
            raise OutputSetError(f"{target} exists; choose another output or pass --overwrite")


def _fault(count: int) -> None:
    spec = os.environ.get("NAPARI_REG_FAULT", "")
    if not spec.startswith("rename:"):
        return
    parts = spec.split(":")
    if int(parts[1]) == count:
        sig = getattr(signal, "SIG" + (parts[2] if len(parts) > 2 else "KILL"))
        os.kill(os.getpid(), sig)
        time.sleep(5)  # a handled signal arrives at the next bytecode; KILL never returns


class OutputSet:
    """Files written together into ``folder``; see the module docstring.

    ``inputs``: files that must never be replaced. ``planned``: names (relative to
    ``folder``, may contain sub-folders) checked at once; further names may be added
    with :meth:`path` while writing. ``marker``: the file written last, whose presence
    means the set is complete.
    """

    def __init__(self, folder: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (),
                 overwrite: bool = False, marker: str | None = None,
                 planned: Iterable[str] = ()) -> None:
        self.folder = Path(folder)
        self.inputs = [Path(p) for p in inputs if p]
        self.overwrite = overwrite
        self.marker = marker
        self.names: list[str] = []
        self._staging: Path | None = None
        self._mode = "files"
        for folder_ in (self.folder, self.folder.parent):
            clean_stale(folder_)
        self.planned = list(planned)
        check_output_plan([self.folder / n for n in self.planned], self.inputs, overwrite)

    # ------------------------------------------------------------------ staging
    def __enter__(self) -> OutputSet:
        try:
            if not self.folder.exists() or (self.folder.is_dir() and not self.folder.is_symlink()
                                            and not any(self.folder.iterdir())):
                self._mode = "fresh"  # a new folder: one rename
            elif self._holds_only(self.planned):
                self._mode = "replace"  # an older result of this set: two renames
            parent = self.folder if self._mode == "files" else self.folder.parent
            parent.mkdir(parents=True, exist_ok=True)
            self._staging = Path(tempfile.mkdtemp(prefix=staging_prefix(), dir=parent))
            # mkdtemp makes 0700; a new output folder (this one, renamed) gets the umask's mode
            os.chmod(self._staging, 0o777 & ~current_umask())
        except OSError as exc:
            raise OutputSetError(f"{self.folder}: cannot write outputs here "
                                 f"({exc.strerror or exc})") from None
        return self

    def path(self, name: str) -> Path:
        """The staging path to write output ``name`` (relative to the output folder) to."""
        if self._staging is None:
            raise RuntimeError("OutputSet.path() outside its 'with' block")
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts:
            raise OutputSetError(f"output name {name!r} must stay inside {self.folder}")
        check_output_plan([self.folder / n for n in [*self.names, name]], self.inputs,
                          self.overwrite)
        self.names.append(os.fspath(rel))
        staged = self._staging / rel
        staged.parent.mkdir(parents=True, exist_ok=True)
        return staged

    def final(self, name: str) -> Path:
        """Where output ``name`` will be once the set is committed."""
        return self.folder / name

    def __exit__(self, exc_type, exc, tb) -> bool:
        staging, self._staging = self._staging, None
        if staging is None:
            return False
        try:
            # Signals wait until the set is in place AND its staging is gone.
            with deferred_signals() as pending:
                if exc_type is None:
                    self._commit(staging)
                    if pending:
                        _KEPT.append(self.folder)
                shutil.rmtree(staging, ignore_errors=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError) and not isinstance(exc, OutputSetError):
            # full disk, quota, I/O error while writing: say where, in one line
            raise OutputSetError(f"{self.folder}: cannot write the outputs "
                                 f"({exc.strerror or exc}); nothing was written") from None
        return False

    # ------------------------------------------------------------------ commit
    def _order(self) -> list[str]:
        marker = [n for n in self.names if n == self.marker]
        return [n for n in self.names if n != self.marker] + marker

    def _commit(self, staging: Path) -> None:
        missing = [n for n in self.names if not (staging / n).is_file()]
        if missing:
            raise OutputSetError(f"outputs were planned but not written: {', '.join(missing)}")
        if self._mode == "fresh":
            _fault(1)
            try:
                os.rename(staging, self.folder)  # the whole set in one step
                return
            except OSError:  # someone created the folder meanwhile: file by file
                pass
        if self._mode == "replace" and self._holds_only(self.names) and self._swap(staging):
            return
        self._commit_files(staging)

    def _holds_only(self, names: list[str]) -> bool:
        """True when the folder holds nothing but files among ``names`` (an older result
        of this very set), so the new set can replace the whole folder. Never for the
        working folder (or one above it), a symbolic link, or anything with a link or
        a foreign file inside."""
        folder = self.folder
        try:
            if folder.is_symlink() or not folder.is_dir():
                return False
            real, cwd = folder.resolve(), Path.cwd().resolve()
            if real == cwd or real in cwd.parents:
                return False
            allowed = {Path(n) for n in names}
            allowed_dirs = {p for n in allowed for p in n.parents if p != Path(".")}
            for entry in folder.rglob("*"):
                rel = entry.relative_to(folder)
                if entry.is_symlink() or rel.parts[0].startswith(STAGING_PREFIX):
                    return False
                if rel not in (allowed_dirs if entry.is_dir() else allowed):
                    return False
        except (OSError, RuntimeError):
            return False
        return bool(names)

    def _swap(self, staging: Path) -> bool:
        """Replace the folder (an older result) by the staged one: folder -> trash, staging
        -> folder. A kill between the two leaves no folder (never a mixed one); the next
        run removes both leftovers. False (nothing changed) when the renames fail."""
        parent = self.folder.parent
        try:
            trash = Path(tempfile.mkdtemp(prefix=staging_prefix() + "old-", dir=parent))
        except OSError:
            return False
        _fault(1)
        try:
            os.rename(self.folder, trash)
        except OSError:
            with contextlib.suppress(OSError):
                trash.rmdir()
            return False
        _fault(2)
        try:
            os.rename(staging, self.folder)
        except OSError:
            os.rename(trash, self.folder)  # put the older result back
            return False
        shutil.rmtree(trash, ignore_errors=True)
        return True

    def _commit_files(self, staging: Path) -> None:
        order = self._order()
        journal = staging / _JOURNAL
        journal.write_text(json.dumps({"folder": os.fspath(self.folder.resolve()),
                                       "files": order}))
        try:
            if self.marker and (self.folder / self.marker).exists():
                (self.folder / self.marker).unlink()  # an old marker must not vouch
            for count, rel in enumerate(order, 1):
                _fault(count)
                target = self.folder / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging / rel, target)
        except OSError as exc:
            raise OutputSetError(f"{self.folder}: cannot move the outputs into place "
                                 f"({exc.strerror or exc})") from None
