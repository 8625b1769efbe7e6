"""A small TextMate tokenizer (the subset the KMR grammar uses), for tests.

Semantics as in vscode-textmate: at each position the pattern whose match starts
earliest wins, ties going to the first listed; `begin`/`end` rules open a region whose
inner patterns apply until `end` matches; captures name groups; a match's own `name`
covers it. Python's `re` understands every regex of the grammar (no Oniguruma-only
syntax is used, which this tokenizer also checks by compiling them).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

GRAMMAR = Path(__file__).resolve().parents[2] / "editors" / "vscode" / "syntaxes" / "kmr.tmLanguage.json"


class Grammar:
    def __init__(self, path: Path = GRAMMAR):
        self.doc = json.loads(path.read_text())
        self.repo = self.doc["repository"]
        self._re: dict[str, re.Pattern] = {}

    def rx(self, src: str) -> re.Pattern:
        if src not in self._re:
            self._re[src] = re.compile(src)
        return self._re[src]

    def flat(self, patterns) -> list[dict]:
        out = []
        for p in patterns:
            if "include" in p:
                out += self.flat([self.repo[p["include"][1:]]])
            elif "patterns" in p and "match" not in p and "begin" not in p:
                out += self.flat(p["patterns"])
            else:
                out.append(p)
        return out

    def scopes(self, line: str) -> list[str | None]:
        """The innermost scope of every character of one line (None: plain text)."""
        out: list[str | None] = [None] * len(line)
        self._run(line, 0, len(line), self.flat(self.doc["patterns"]), out)
        return out

    def _run(self, line, pos, stop, patterns, out) -> int:
        while pos < stop:
            best = None
            for p in patterns:
                m = self.rx(p.get("match") or p["begin"]).search(line, pos, stop)
                if m and (best is None or m.start() < best[1].start()):
                    best = (p, m)
            if best is None or best[1].end() == best[1].start() == pos and "begin" not in best[0]:
                return stop
            p, m = best
            self._paint(out, m, p)
            if "begin" in p:
                inner = self.flat(p.get("patterns", []))
                end_rx = self.rx(p["end"])
                pos = m.end()
                while pos < stop:
                    e = end_rx.search(line, pos, stop)
                    first = min(((q, self.rx(q["match"]).search(line, pos, stop)) for q in inner),
                                key=lambda qm: qm[1].start() if qm[1] else 1 << 30, default=(None, None))
                    if first[1] and (e is None or first[1].start() < e.start()):
                        self._paint(out, first[1], first[0], p.get("name"))
                        pos = max(first[1].end(), pos + 1)
                        continue
                    end = e.end() if e else stop
                    for i in range(m.start(), end):
                        out[i] = out[i] or p.get("name")
                    pos = end
                    break
            else:
                pos = max(m.end(), pos + 1)
        return pos

    @staticmethod
    def _paint(out, m, p, outer=None):
        for i in range(m.start(), m.end()):
            out[i] = p.get("name") or outer
        for g, cap in p.get("captures", {}).items():
            if m.group(int(g)) is not None:
                for i in range(m.start(int(g)), m.end(int(g))):
                    out[i] = cap["name"]
