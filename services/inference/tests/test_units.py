"""Unit normalization to UCUM through ucumvert and pint."""

from __future__ import annotations

import pytest

from ehrflow_inference.units import is_ucum, normalize


@pytest.mark.parametrize(
    ("value", "unit", "to", "expected"),
    [
        (100.4, "[degF]", "Cel", 38.0),
        (37.0, "Cel", "Cel", 37.0),
        (12.0, "kPa", "mm[Hg]", 90.0074),
        (120.0, "mm[Hg]", "mm[Hg]", 120.0),
        (2.0, "L/min", "L/min", 2.0),
        (2000.0, "mL/min", "L/min", 2.0),
        (1.0, "/s", "/min", 60.0),
    ],
)
def test_ucum_units_convert(value: float, unit: str, to: str, expected: float) -> None:
    assert normalize(value, unit, to) == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize(("unit", "to"), [("mmHg", "mm[Hg]"), ("/min", "Cel"), ("", "Cel"), ("°F", "Cel")])
def test_what_is_not_ucum_or_not_the_same_dimension_is_none(unit: str, to: str) -> None:
    assert normalize(1.0, unit, to) is None


def test_is_ucum() -> None:
    assert is_ucum("[degF]") and is_ucum("mm[Hg]") and is_ucum("%")
    assert not is_ucum("degF") and not is_ucum("mmHg")
