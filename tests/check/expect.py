"""Inline expectations of golden files.

A golden `.kmr` file states the diagnostics it must produce in comments on the line
where each is reported:

    size <= 2 ms            # expect: KMR212
    knob k : int in [0 4]   # expect: KMR104@20      (also pins the column)
    prune(amount = x, y = 1)  # expect: KMR201, KMR208

Header comments (anywhere in the file) choose how it is checked:

    # facts: none           no facts provider: selectors are not checked against a model
    # trust: true           check with trust=True (the CLI's --trust)

Files under a `lib/` folder next to the goldens are helpers imported by them; their own
`# expect:` comments count when a golden that imports them is checked.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

_EXPECT = re.compile(r"#\s*expect:\s*(.+)$")
_ITEM = re.compile(r"(KMR\d{3})(?:@(\d+))?")
_HEADER = re.compile(r"^#\s*(facts|trust):\s*(\S+)", re.M)


def expectations(path: Path) -> list[tuple[str, int, str, int | None]]:
    """(resolved file, line, code, column or None) for every `# expect:` item."""
    out = []
    key = str(Path(path).resolve())
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").split("\n"), start=1):
        m = _EXPECT.search(line)
        if m:
            out.extend((key, number, code, int(col) if col else None) for code, col in _ITEM.findall(m.group(1)))
    return out


def headers(path: Path) -> dict[str, str]:
    return dict(_HEADER.findall(Path(path).read_text(encoding="utf-8")))


def compare(main: Path, diags) -> str | None:
    """None when the diagnostics are exactly the expected ones, else a description."""
    files = {str(Path(main).resolve())}
    files |= {str(Path(d.span.file).resolve()) for d in diags if d.span.line > 0 and Path(d.span.file).is_file()}
    expected = [e for f in sorted(files) for e in expectations(Path(f))]
    got = Counter((str(Path(d.span.file).resolve()), d.span.line, d.code) for d in diags)
    want = Counter((f, line, code) for f, line, code, _ in expected)
    problems = []
    for (f, line, code), n in (want - got).items():
        problems.append(f"missing {code} at {Path(f).name}:{line} (x{n})")
    for (f, line, code), n in (got - want).items():
        problems.append(f"unexpected {code} at {Path(f).name}:{line} (x{n})")
    for f, line, code, col in expected:
        if col is None:
            continue
        cols = [d.span.col for d in diags if str(Path(d.span.file).resolve()) == f and d.span.line == line
                and d.code == code]
        if cols and col not in cols:
            problems.append(f"{code} at {Path(f).name}:{line} is at column {cols}, expected {col}")
    return "; ".join(problems) or None


__all__ = ["compare", "expectations", "headers"]
