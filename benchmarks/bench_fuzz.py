"""The grammar fuzz at scale: 10,000 programs through parser, formatter, checker and
verifier, counting internal errors (the target is 0).

Programs come from three generators in tests/fuzz/programs.py, in equal shares:
- `programs()`: drawn from the generation grammar (grammar/kmr_gen.lark);
- `deep_unicode_programs()`: one expression nested 0-12 levels, within 4 of the
  parser's limit, or far past it (300, 1,000, 10,000), in a budget line, objective,
  derived meter, rule precondition, step argument or property check, with unicode
  names, strings, comments and noise (other scripts' digits, byte order mark,
  zero-width and bidirectional controls, separators, NUL);
- token mutations of the grammar programs.
Each goes through `check_all_stages` of tests/fuzz/test_fuzz.py: `parse` never raises
and reports registered KMR1xx/2xx codes inside the text; `kmr fmt` formats what parses
into the same program (idempotently) and refuses what does not; the checker, with a
fake model's facts, never reports KMR500; a program that checks is verified and the
verifier reports no internal error. A case that breaks any of these is counted (and
its text printed), not stopped at. Deterministic (Hypothesis, derandomized).

Run: .venv/bin/python benchmarks/bench_fuzz.py [--programs 10000] [--no-verify]
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fuzz.programs import deep_unicode_programs, programs  # noqa: E402
from fuzz.test_fuzz import check_all_stages, mutate_tokens, token_ops  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--programs", type=int, default=10_000)
    ap.add_argument("--no-verify", action="store_true", help="stop at the checker")
    args = ap.parse_args()
    outcomes: collections.Counter = collections.Counter()
    sources: collections.Counter = collections.Counter()
    failures: list[tuple[str, str]] = []
    start = time.perf_counter()

    inputs = st.one_of(
        programs().map(lambda p: ("grammar", p)),
        deep_unicode_programs().map(lambda p: ("deep+unicode", p)),
        st.tuples(programs(), token_ops).map(lambda t: ("mutated", mutate_tokens(*t))),
    )

    @settings(max_examples=args.programs, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(inputs)
    def run(case):
        kind, text = case
        sources[kind] += 1
        try:
            outcomes[check_all_stages(text, verify_too=not args.no_verify)] += 1
        except Exception:  # noqa: BLE001 - counted and shown, the run goes on
            outcomes["INTERNAL ERROR"] += 1
            failures.append((text, traceback.format_exc(limit=3)))
        n = sum(sources.values())
        if n % 500 == 0:
            print(f"  {n:>6} programs, {time.perf_counter() - start:6.0f} s, "
                  f"{outcomes['INTERNAL ERROR']} internal errors", flush=True)

    run()
    total = sum(sources.values())
    wall = time.perf_counter() - start
    print(f"\n{total} programs in {wall:.0f} s ({', '.join(f'{k} {v}' for k, v in sorted(sources.items()))})")
    for key in ("syntax", "nesting", "checker", "checked", "verified", "INTERNAL ERROR"):
        print(f"  {key:<15} {outcomes.get(key, 0):>6}")
    for text, tb in failures[:5]:
        print("\n--- failing program:\n" + text[:2000] + "\n" + tb)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
