"""A run's output folder, written as one set: never an old report beside a new model.

Contract: `OutputSet(out_dir, span)`:
- `prepare()` runs before the pipeline: it refuses (KMR505) an `out_dir` that is a
  file, the current folder or one above it, that holds anything besides a KMR output set (`model.safetensors`,
  `report.json`, `report.md`: `--out .` must not replace a project folder), or whose
  parent is not writable, and it creates the staging folder, a hidden sibling
  `.NAME.kmr-stage-PID-RANDOM`, so an unwritable place is reported before any work.
  Staging folders left by a killed process (its PID no longer runs) are removed.
- Writers put the whole set into `stage`; `commit()` fsyncs it and swaps it into place:
  renamed to `out_dir` when there is none, else exchanged with the old folder in one
  atomic `renameat2(RENAME_EXCHANGE)` (Linux; elsewhere two renames, and a kill between
  them leaves no `out_dir` rather than a mixed one), then the old set is removed.
- `discard()` removes the staging folder (an error, Ctrl-C): the old set stays as it was.
"""

from __future__ import annotations

import ctypes
import os
import re
import secrets
import shutil
from pathlib import Path

from kmr_dsl.diagnostics import KmrError, Span, error

SET_FILES = ("model.safetensors", "report.json", "report.md")
_STAGE = re.compile(r"\.kmr-(?:stage|old)-(\d+)-[0-9a-f]+$")


def _fail(span: Span, message: str, *notes: str) -> KmrError:
    return KmrError(error("KMR505", span, message, *notes,
                          hint="choose another --out folder: a new one, or one an earlier `kmr run` wrote"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders atomically (Linux renameat2); False where the call is missing."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


class OutputSet:
    def __init__(self, out_dir, span: Span | None = None):
        out = Path(os.path.abspath(out_dir))
        if out.is_symlink():          # replace the folder it points to, not the link
            out = out.resolve()
        self.out = out
        self.span = span or Span.unknown(str(out_dir))
        self.stage: Path | None = None

    @property
    def _parent(self) -> Path:
        return self.out.parent

    def sweep(self) -> None:
        """Remove staging folders of this output that a killed process left behind."""
        prefix = f".{self.out.name}.kmr-"
        try:
            entries = list(self._parent.iterdir())
        except OSError:
            return
        for entry in entries:
            m = _STAGE.search(entry.name)
            if entry.name.startswith(prefix) and m and entry.is_dir() and not _alive(int(m.group(1))):
                shutil.rmtree(entry, ignore_errors=True)

    def prepare(self) -> Path:
        out = self.out
        here = Path(os.path.abspath("."))
        if out == here or out in here.parents or out.parent == out:
            raise _fail(self.span, f"--out `{out}` is the current folder or one above it",
                        "the output folder is replaced as a whole")
        if out.exists() and not out.is_dir():
            raise _fail(self.span, f"--out `{out}` is a file, not a folder")
        if out.is_dir():
            foreign = sorted(n for n in os.listdir(out) if n not in SET_FILES)
            if foreign:
                raise _fail(self.span, f"--out `{out}` holds files that are not a KMR output set",
                            "found: " + ", ".join(foreign[:6]) + (" ..." if len(foreign) > 6 else ""),
                            "the folder is replaced as a whole, so KMR writes only into a folder of its own")
            if not os.access(out, os.W_OK | os.X_OK):
                raise _fail(self.span, f"cannot replace the files in `{out}`: the folder is not writable")
        try:
            self._parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _fail(self.span, f"cannot create `{self._parent}`", str(exc)) from exc
        self.sweep()
        stage = self._parent / f".{out.name}.kmr-stage-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            stage.mkdir()
        except OSError as exc:
            raise _fail(self.span, f"cannot write into `{self._parent}`", str(exc)) from exc
        self.stage = stage
        return stage

    def commit(self) -> None:
        stage = self.stage
        assert stage is not None, "prepare() first"
        for name in os.listdir(stage):
            with open(stage / name, "rb") as handle:
                os.fsync(handle.fileno())
        _fsync_dir(stage)
        out = self.out
        try:
            if not out.exists():
                os.rename(stage, out)
            elif _exchange(stage, out):
                shutil.rmtree(stage, ignore_errors=True)      # it holds the old set now
            else:
                old = self._parent / f".{out.name}.kmr-old-{os.getpid()}-{secrets.token_hex(4)}"
                os.rename(out, old)
                try:
                    os.rename(stage, out)
                except BaseException:
                    os.rename(old, out)
                    raise
                shutil.rmtree(old, ignore_errors=True)
        except OSError as exc:
            self.discard()
            raise _fail(self.span, f"cannot move the outputs into `{out}`", str(exc)) from exc
        self.stage = None
        _fsync_dir(self._parent)

    def discard(self) -> None:
        if self.stage is not None:
            shutil.rmtree(self.stage, ignore_errors=True)
            self.stage = None


__all__ = ["OutputSet", "SET_FILES"]
