"""Write a formatted file in place, safely.

Contract: `write_formatted(path, text)` replaces the file's text atomically (a
temporary file in the same folder, then a rename, so an interrupted `kmr fmt` never
leaves half a file). A symlink is written through to its target (the link stays a
link); the file's permission bits (and, where allowed, its owner) are kept. Any
failure — a read-only file or folder, a full disk — is returned as one KMR509
diagnostic located at the file; the original file is then unchanged and no temporary
file is left behind. Never raises OSError.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from kmr_dsl.diagnostics import Diagnostic, Span, error


def _cannot(path, why: str, hint: str) -> Diagnostic:
    return error("KMR509", Span(str(path), 1, 1, 1, 2), f"cannot write the formatted {path}: {why}", hint=hint)


def write_formatted(path: str | Path, text: str) -> Diagnostic | None:
    """Replace the text of `path` (through symlinks) by `text`; a diagnostic on failure."""
    target = Path(os.path.realpath(path))
    try:
        info = target.stat()
    except OSError as e:
        return _cannot(path, e.strerror or str(e), "check the path")
    if not os.access(target, os.W_OK):
        return _cannot(path, "the file is read-only", "make it writable (chmod u+w) to format it, "
                                                      "or use `kmr fmt --check` to only report")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".kmrfmt.tmp", dir=target.parent)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.chmod(tmp, stat.S_IMODE(info.st_mode))
        try:
            os.chown(tmp, info.st_uid, info.st_gid)
        except OSError:
            pass            # not ours to give away: the new file keeps our ownership
        os.replace(tmp, target)
        tmp = None
    except OSError as e:
        where = "its folder is not writable" if isinstance(e, PermissionError) else (e.strerror or str(e))
        return _cannot(path, where, f"make {target.parent} writable, or use `kmr fmt --check` to only report")
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return None


__all__ = ["write_formatted"]
