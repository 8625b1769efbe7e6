"""Sharding the differential sweep (tests/verify/soundness.py `sweep`): the shards of a
sweep judge exactly the unsharded sweep's cases, each once, and their tallies merge into
the unsharded tally. The cases are drawn for real; the judge is a stand-in that reads the
case (one disagreement per case, so the shortest program per kind is merged too), since
judging a case is a check, a proof and real runs."""

from __future__ import annotations

import json

import pytest

from tests.verify.soundness import Result, Tally, sweep
from tests.verify.soundness_cases import signature

CASES = 6


def _judge(case) -> Result:
    res = Result(program=case.program([]), signature=signature(case), verdict=case.arch.family)
    res.add("seen", case.arch.family)
    return res


def _sweep(tmp_path, shard=(0, 1)) -> Tally:
    return sweep(CASES, tmp_path, shard=shard, judge=_judge)


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    return _sweep(tmp_path_factory.mktemp("whole"))


def test_two_shards_are_the_unsharded_cases(tmp_path, whole):
    assert whole.cases == CASES and len(set(whole.ids)) == CASES
    a, b = _sweep(tmp_path, (0, 2)), _sweep(tmp_path, (1, 2))
    assert a.cases + b.cases == CASES and not set(a.ids) & set(b.ids)
    assert [int(i.split(":")[0]) % 2 for i in a.ids] == [0] * a.cases
    # a round trip through JSON, as `--merge` reads the shards' files
    merged = Tally.merged([json.loads(json.dumps(t.to_json())) for t in (b, a)])
    assert merged.ids == whole.ids
    assert merged.verdicts == whole.verdicts and merged.kinds == whole.kinds
    assert merged.shortest == whole.shortest
    assert [f["id"] for f in merged.failing] == whole.ids


def test_three_shards_too(tmp_path, whole):
    parts = [_sweep(tmp_path, (i, 3)) for i in range(3)]
    assert sorted(i for p in parts for i in p.ids) == sorted(whole.ids)


def test_a_shard_outside_its_count_is_refused(tmp_path):
    with pytest.raises(ValueError):
        _sweep(tmp_path, (2, 2))
