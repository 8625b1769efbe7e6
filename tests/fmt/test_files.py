"""`kmr fmt` on the file system and on programs it must not touch: a unit typo that
would become two budget lines, symlinks, permission bits, read-only places, huge files."""

from __future__ import annotations

import contextlib
import io
import os
import stat

import pytest

from kmr_dsl.cli import main
from kmr_dsl.fmt import MAX_SOURCE_CHARS, format_source

UGLY = 'import "std"\nknob   x : int in [0, 4] = 2\n'
PRETTY = 'import "std"\n\nknob x : int in [0, 4] = 2\n'


def fmt(*argv) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        rc = main(["fmt", *map(str, argv)])
    return rc, buf.getvalue()


def test_a_unit_typo_is_refused_not_split_into_two_lines(tmp_path):
    text = 'import "std"\nmodel m = factory("a:b")\npipeline p(m) {\n    budget {\n        size <= 16 kb\n    }\n}\n'
    out, diags = format_source(text, "kb.kmr")
    assert out is None and [d.code for d in diags] == ["KMR107"]
    path = tmp_path / "kb.kmr"
    path.write_text(text)
    rc, printed = fmt(path)
    assert rc == 2 and "KMR107" in printed and path.read_text() == text


def test_a_symlink_stays_a_link_and_its_target_is_formatted(tmp_path):
    target = tmp_path / "real.kmr"
    target.write_text(UGLY)
    link = tmp_path / "link.kmr"
    link.symlink_to(target)
    rc, printed = fmt(link)
    assert rc == 0, printed
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text() == PRETTY


@pytest.mark.parametrize("mode", [0o750, 0o640, 0o604])
def test_permission_bits_are_kept(tmp_path, mode):
    path = tmp_path / "m.kmr"
    path.write_text(UGLY)
    path.chmod(mode)
    assert fmt(path)[0] == 0
    assert path.read_text() == PRETTY and stat.S_IMODE(path.stat().st_mode) == mode


def test_no_temporary_file_is_left(tmp_path):
    path = tmp_path / "m.kmr"
    path.write_text(UGLY)
    fmt(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.kmr"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_a_read_only_folder_is_kmr509_and_the_file_unchanged(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "m.kmr"
    path.write_text(UGLY)
    folder.chmod(0o555)
    try:
        rc, printed = fmt(path)
    finally:
        folder.chmod(0o755)
    assert rc == 2 and "KMR509" in printed and "KMR500" not in printed and str(path) in printed
    assert path.read_text() == UGLY


def test_a_failed_write_is_kmr509_located_at_the_file(tmp_path, monkeypatch):
    """Whatever the OS refuses (a read-only folder for a non-root user, a full disk):
    simulated here at the rename, which root cannot be refused otherwise."""
    path = tmp_path / "m.kmr"
    path.write_text(UGLY)

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", refuse)
    rc, printed = fmt(path)
    assert rc == 2 and "error[KMR509]" in printed and f"{path}:1:1" in printed and "KMR500" not in printed
    assert path.read_text() == UGLY
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.kmr"]


def test_a_huge_file_is_refused_quickly(tmp_path):
    path = tmp_path / "huge.kmr"
    line = 'import "std" ' + "knob k : float in [0.0, 1.0] = 0.5 " * (10 * 1024 * 1024 // 35)
    path.write_text(line + "\n")
    rc, printed = fmt(path)
    assert rc == 2 and "KMR510" in printed and "KMR500" not in printed
    assert len(printed) < 1000          # the file is named, its 10 MB line is not printed
    out, diags = format_source("#" * (MAX_SOURCE_CHARS + 1), "big.kmr")
    assert out is None and [d.code for d in diags] == ["KMR510"]
