"""The search journal: one JSON line per trial, durable as soon as the trial ends.

Contract: `OUT/journal.jsonl` starts with a header line (`"kind": "header"`: pipeline,
strategy, options, seed, the space's ladders) and then holds one `"kind": "trial"` line
per trial (trial.Trial.to_json), appended, flushed and fsynced as each trial finishes,
so a killed search loses at most the trial that was running.

`Journal.open(path, header, resume)`:
- without `resume`: a fresh journal; an older one is kept as `journal.jsonl.bak`
  (with a KMR508 warning) rather than silently destroyed;
- with `resume`: the old header must match the new one (else KMR502: the journal
  belongs to another search); its trials become `replay`, a dict setting-key -> Trial
  that the driver serves instead of rerunning. A line that does not parse (a search
  killed mid-write leaves half a line) is dropped with a KMR508 warning naming the file
  and line, and the file is cut back to its last whole line before anything is
  appended, so the next line never glues onto the broken one. A line that parses but is
  not a trial (fields missing or of the wrong type: edited by hand, written by another
  tool) is skipped with a KMR508 warning at its line; the trial runs again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from kmr_dsl.diagnostics import Diagnostic, KmrError, Span, error, warning
from kmr_dsl.search.space import key
from kmr_dsl.search.trial import ERROR, FAILS, OK, RAN, SKIPPED, Trial

VERSION = 1
# header fields that must agree for --resume to continue a journal
MATCHED = ("version", "pipeline", "strategy", "options", "seed", "space")


# optional trial fields and the JSON types they must have when present
_FIELDS = {"meters": dict, "baseline": dict, "lines": list, "feasible": bool, "message": str}


def _numberish(value) -> bool:
    """A number as the journal writes one: a JSON number, null, or text such as "inf"."""
    if value is None:
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    try:
        float(value)
        return isinstance(value, str)
    except (TypeError, ValueError):
        return False


def parse_trial(record: dict) -> Trial:
    """A journal record as a Trial; ValueError naming what is wrong if it is not one."""
    index, setting, status = record.get("index"), record.get("setting"), record.get("status")
    if not isinstance(index, int) or isinstance(index, bool):
        raise ValueError("its `index` is not a whole number")
    if not isinstance(setting, dict):
        raise ValueError("its `setting` is not an object")
    if status not in (OK, FAILS, SKIPPED, ERROR):
        raise ValueError(f"its `status` {status!r} is not a trial status")
    for name, kind in _FIELDS.items():
        if name in record and not isinstance(record[name], kind):
            raise ValueError(f"its `{name}` is not a {kind.__name__}")
    for name in ("objective", "violation", "seconds"):
        if not _numberish(record.get(name)):
            raise ValueError(f"its `{name}` is not a number")
    if not all(isinstance(line, dict) for line in record.get("lines", [])):
        raise ValueError("its `lines` are not objects")
    try:
        return Trial.from_json(record)
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise ValueError(f"it does not make a trial ({e})") from e


class Journal:
    def __init__(self, path: Path, header: dict):
        self.path = Path(path)
        self.header = {"kind": "header", "version": VERSION, **header}
        self.replay: dict[str, Trial] = {}       # trials that ran, by setting key
        self.skipped: set[str] = set()           # settings already recorded as skipped
        self.old: list[Trial] = []               # every trial read back, in order
        self.warnings: list[Diagnostic] = []
        self._file = None

    # ------------------------------------------------------------ opening

    @classmethod
    def open(cls, path: Path, header: dict, resume: bool = False) -> "Journal":
        journal = cls(path, header)
        try:
            journal.path.parent.mkdir(parents=True, exist_ok=True)
            if resume and journal.path.exists():
                journal._read_back()
            elif resume:
                journal.warnings.append(warning(
                    "KMR508", Span.unknown(str(journal.path)), "--resume: no journal to continue; starting a new search"))
                journal._start()
            else:
                if journal.path.exists():
                    backup = journal.path.with_name(journal.path.name + ".bak")
                    os.replace(journal.path, backup)
                    journal.warnings.append(warning(
                        "KMR508", Span.unknown(str(journal.path)),
                        f"an earlier journal was moved to {backup.name}",
                        hint="pass --resume to continue an earlier search instead of starting over"))
                journal._start()
        except OSError as e:
            raise KmrError(error("KMR505", Span.unknown(str(journal.path)), f"cannot write the journal: {e}"))
        return journal

    def _start(self) -> None:
        self._file = open(self.path, "w", encoding="utf-8")
        self._write(self.header)

    def _read_back(self) -> None:
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        good_end = 0        # byte offset just past the last whole, parsable line
        offset = 0
        header = None
        for number, line in enumerate(lines, start=1):
            end = offset + len(line) + 1
            whole = end <= len(raw)            # the last piece has no newline after it
            if not line.strip():
                offset = end
                continue
            try:
                if not whole:
                    raise ValueError("no newline at the end")
                record = json.loads(line.decode("utf-8"))
                if not isinstance(record, dict):
                    raise ValueError("not an object")
            except (ValueError, UnicodeDecodeError) as e:
                self.warnings.append(warning(
                    "KMR508", Span(str(self.path), number, 1, number, 2),
                    f"ignoring a damaged journal line ({e}); the trial on it will run again",
                    hint="nothing to do: a search killed while writing leaves such a line"))
                offset = end
                continue
            if record.get("kind") == "header":
                header = record
            elif record.get("kind") == "trial":
                try:
                    self._remember(parse_trial(record))
                except ValueError as e:
                    self.warnings.append(warning(
                        "KMR508", Span(str(self.path), number, 1, number, 2),
                        f"ignoring a journal line that is not a trial: {e}; that trial will run again",
                        hint="nothing to do; a journal edited by hand or by another tool can hold such a line"))
            good_end = min(end, len(raw))
            offset = end
        self._check_header(header)
        with open(self.path, "r+b") as f:
            f.truncate(good_end)   # drop a torn tail so appends start on a fresh line
        self._file = open(self.path, "a", encoding="utf-8")

    def _check_header(self, old: dict | None) -> None:
        span = Span.unknown(str(self.path))
        if old is None:
            raise KmrError(error("KMR502", span, "--resume: the journal has no header line",
                                 hint="start a new search without --resume, or choose another --out"))
        new = json.loads(json.dumps(self.header, default=str))   # compare as JSON sees it
        diffs = [f"{k}: journal has {old.get(k)!r}, this search has {new.get(k)!r}"
                 for k in MATCHED if old.get(k) != new.get(k)]
        if diffs:
            raise KmrError(error("KMR502", span, "--resume: the journal belongs to a different search", *diffs,
                                 hint="resume with the same strategy, options and seed, or drop --resume"))

    def _remember(self, trial: Trial) -> None:
        self.old.append(trial)
        if trial.status in RAN:
            self.replay[key(trial.setting)] = trial
        elif trial.status == SKIPPED:
            self.skipped.add(key(trial.setting))

    # ------------------------------------------------------------ writing

    def append(self, trial: Trial) -> None:
        self._write(trial.to_json())
        if trial.status == SKIPPED:
            self.skipped.add(key(trial.setting))

    def _write(self, record: dict) -> None:
        # one write per line, then flush + fsync: the line is on disk before we go on
        self._file.write(json.dumps(record, default=str) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_trials(path: Path) -> list[Trial]:
    """Every whole trial line of a journal (damaged lines skipped), for reports."""
    out = []
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("kind") == "trial":
            try:
                out.append(parse_trial(record))
            except ValueError:
                continue
    return out
