"""Unit normalization to UCUM, with ucumvert (UCUM's grammar, read into pint's units) rather than factors
written by hand.

``normalize(value, unit, to)`` converts a quantity in any UCUM unit to the UCUM unit a workflow computes in
(``[degF]`` to ``Cel``, ``kPa`` to ``mm[Hg]``); an organization maps its EHR's non-UCUM unit strings to UCUM
codes in its contract (``mapping.units``: ``{"degF": "[degF]", "mmHg": "mm[Hg]"}``). A unit that is not
UCUM, or not convertible to the one wanted, gives None: the reading does not count (a workflow then names
what is missing), it is never guessed.

Conversions are affine (``a * value + b``: temperature has an offset), so each pair of units is converted
through pint once and cached as its two coefficients: a search of 200 Observations costs a dict lookup
each, not 200 pint conversions.
"""

from __future__ import annotations

from functools import cache

from lark.exceptions import LarkError
from pint.errors import PintError
from ucumvert import PintUcumRegistry


@cache
def _registry() -> PintUcumRegistry:
    return PintUcumRegistry()  # about half a second, once per process


@cache
def _affine(unit: str, to: str) -> tuple[float, float] | None:
    registry = _registry()
    try:
        source, target = registry.from_ucum(unit).units, registry.from_ucum(to).units
        zero = registry.Quantity(0.0, source).to(target).magnitude
        one = registry.Quantity(1.0, source).to(target).magnitude
    except (LarkError, PintError, ValueError, KeyError, AttributeError):  # not UCUM, or not the same dimension
        return None
    return float(one - zero), float(zero)


def normalize(value: float, unit: str, to: str) -> float | None:
    """``value`` in ``unit`` (UCUM) expressed in ``to`` (UCUM), or None when it cannot be."""
    if unit == to:
        return value
    found = _affine(unit, to)
    if found is None:
        return None
    slope, offset = found
    return slope * value + offset


def is_ucum(unit: str) -> bool:
    try:
        _registry().from_ucum(unit)
    except (LarkError, PintError, ValueError, KeyError, AttributeError):
        return False
    return True
