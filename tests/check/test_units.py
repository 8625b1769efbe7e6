"""kmr_dsl.units: the unit table of spec section 2 and the dimension algebra."""

from __future__ import annotations

import pytest

from kmr_dsl import units
from kmr_dsl.units import BYTES, NUMBER, TIME


@pytest.mark.parametrize("value, unit, base, dim", [
    (16, "KB", 16_000, BYTES), (1, "MB", 1_000_000, BYTES), (2, "GB", 2_000_000_000, BYTES), (3, "B", 3, BYTES),
    (1, "KiB", 1024, BYTES), (2, "MiB", 2 * 1024 ** 2, BYTES), (1, "GiB", 1024 ** 3, BYTES),
    (2, "ms", 0.002, TIME), (500, "us", 0.0005, TIME), (1.5, "s", 1.5, TIME),
    (25, "%", 0.25, NUMBER), (7, "%", 0.07, NUMBER),
    (1.5, "M", 1_500_000, NUMBER), (2, "K", 2000, NUMBER), (1, "G", 10 ** 9, NUMBER),
])
def test_to_base(value, unit, base, dim):
    got, got_dim = units.to_base(value, unit)
    assert got == base and got_dim == dim
    if dim == BYTES or unit in ("K", "M", "G"):
        assert isinstance(got, int)      # whole byte and count quantities are exact ints


def test_every_lexer_unit_is_known():
    from kmr_dsl.parse.lalr import UNITS

    assert set(UNITS) == set(units.UNITS)


def test_dimension_algebra():
    assert units.mul(NUMBER, BYTES) == BYTES
    assert units.div(BYTES, BYTES) == NUMBER
    assert units.div(BYTES, TIME) == (("bytes", 1), ("time", -1))
    assert units.dim_label(units.div(BYTES, TIME)) == "bytes/time"
    assert units.dim_label(units.div(NUMBER, TIME)) == "1/time"
    assert units.dim_label(units.mul(BYTES, BYTES)) == "bytes^2"
    assert units.mul(units.div(NUMBER, TIME), TIME) == NUMBER
    assert [units.dim_label(units.meter_dim(w)) for w in ("bytes", "time", "count", "ratio", "number")] == \
        ["bytes", "time", "number", "number", "number"]
