"""A result reproduces within one process: each `verify` builds its Z3 terms in a context
of its own, so what earlier calls built cannot steer the solver (STYLE.md 10). Before,
one program verified four times in one process by Z3 got four different witnesses."""

from __future__ import annotations

import z3

from kmr_dsl.verify import verify
from kmr_dsl.verify.obligations import clear_caches

from tests.verify.test_knapsack import program
from tests.verify.test_shared_terms import PER_LAYER as SRC     # per-layer families, a `>=` line


def _z3_witness(prog, clear: bool):
    if clear:
        clear_caches()
    (res,) = [r for r in verify(prog, use_bounds=False).results if r.kind == "feasibility"]
    assert res.method == "z3"
    return res.witness


def test_the_same_program_gets_the_same_z3_witness_every_time_in_one_process():
    prog = program(SRC, 6)
    first = _z3_witness(prog, clear=True)
    verify(prog)                                   # other solver calls in between
    z3.Solver().check(z3.Real("x") > z3.RealVal(1))     # and the caller's own Z3 work
    assert _z3_witness(prog, clear=False) == first
    assert _z3_witness(prog, clear=True) == first
    assert _z3_witness(prog, clear=False) == first


def test_the_callers_z3_context_is_left_as_it_was():
    before = z3.main_ctx()
    x = z3.Real("x")
    verify(program(SRC, 3))
    assert z3.main_ctx() is before
    s = z3.Solver()
    s.add(x > 2)                                   # the caller's terms still work
    assert s.check() == z3.sat


def test_two_threads_verifying_at_once_take_turns():
    """The context is the process's global: a second thread's `verify` waits for the
    first rather than swapping the context under it (mixed contexts are a Z3 error)."""
    import threading

    prog = program(SRC, 6)
    want = _z3_witness(prog, clear=True)
    got, errors = [], []

    def work():
        try:
            got.append(_z3_witness(prog, clear=False))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and got == [want] * 3
