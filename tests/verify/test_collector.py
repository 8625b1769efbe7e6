"""`verify` pauses the cyclic garbage collector and, on the way out, moves what it keeps
to the oldest generation, so the next young collection does not traverse it
(verify/obligations.py `_no_cycle_collection`); the caller's collector setting stays."""

from __future__ import annotations

import gc

from kmr_dsl.verify import verify
from kmr_dsl.verify.obligations import clear_caches

from tests.verify.test_knapsack import program
from tests.verify.test_shared_terms import PER_LAYER as SRC


def test_what_verify_keeps_is_not_left_to_the_young_generations():
    prog = program(SRC, 200)
    clear_caches()
    gc.collect()
    assert gc.isenabled()
    report = verify(prog)
    assert report.results and gc.isenabled()
    # built inside verify and kept: in the oldest generation, not traversed by a young
    # collection on the way there (one would have moved it to the middle generation)
    kept = report.results[0]
    assert any(o is kept for o in gc.get_objects(generation=2))
    assert not any(o is kept for o in gc.get_objects(generation=1))


def test_the_collector_stays_off_for_a_caller_that_turned_it_off():
    prog = program(SRC, 3)
    gc.disable()
    try:
        verify(prog)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_cycles_made_before_verify_are_still_collected():
    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a
    gc.disable()                 # keep the cycle young until verify runs
    gc.enable()
    verify(program(SRC, 3))
    alive = [id(a)]
    del a, b
    gc.collect()
    assert not any(id(o) in alive for o in gc.get_objects())
