"""NEWS2 against the Royal College of Physicians chart: every band edge of every parameter, both sides."""

from __future__ import annotations

import pytest

from ehrflow_inference.workflows.news2 import score as news2


@pytest.mark.parametrize(
    ("rate", "points"),
    [(0, 3), (8, 3), (8.4, 3), (8.5, 1), (9, 1), (11, 1), (12, 0), (20, 0), (21, 2), (24, 2), (25, 3), (60, 3)],
)
def test_respiration_rate(rate: float, points: int) -> None:
    assert news2.score_respiration_rate(rate) == points


@pytest.mark.parametrize(("spo2", "points"), [(70, 3), (91, 3), (92, 2), (93, 2), (94, 1), (95, 1), (96, 0), (100, 0)])
def test_spo2_scale1(spo2: float, points: int) -> None:
    assert news2.score_spo2_scale1(spo2) == points


@pytest.mark.parametrize(
    ("spo2", "on_oxygen", "points"),
    [
        (83, False, 3),
        (84, False, 2),
        (85, False, 2),
        (86, False, 1),
        (87, False, 1),
        (88, False, 0),
        (92, False, 0),
        (93, False, 0),
        (97, False, 0),
        (100, False, 0),  # on air, anything ≥ 88 scores 0
        (83, True, 3),
        (88, True, 0),
        (92, True, 0),
        (93, True, 1),
        (94, True, 1),
        (95, True, 2),
        (96, True, 2),
        (97, True, 3),
        (100, True, 3),
    ],
)
def test_spo2_scale2(spo2: float, on_oxygen: bool, points: int) -> None:
    assert news2.score_spo2_scale2(spo2, on_oxygen) == points


def test_air_or_oxygen() -> None:
    assert (news2.score_air_or_oxygen(False), news2.score_air_or_oxygen(True)) == (0, 2)


@pytest.mark.parametrize(
    ("systolic", "points"),
    [(60, 3), (90, 3), (91, 2), (100, 2), (101, 1), (110, 1), (111, 0), (219, 0), (220, 3), (260, 3)],
)
def test_systolic_bp(systolic: float, points: int) -> None:
    assert news2.score_systolic_bp(systolic) == points


@pytest.mark.parametrize(
    ("pulse", "points"),
    [(30, 3), (40, 3), (41, 1), (50, 1), (51, 0), (90, 0), (91, 1), (110, 1), (111, 2), (130, 2), (131, 3), (180, 3)],
)
def test_pulse(pulse: float, points: int) -> None:
    assert news2.score_pulse(pulse) == points


@pytest.mark.parametrize(("level", "points"), [("A", 0), ("C", 3), ("V", 3), ("P", 3), ("U", 3)])
def test_consciousness(level: news2.Consciousness, points: int) -> None:
    assert news2.score_consciousness(level) == points


@pytest.mark.parametrize(
    ("celsius", "points"),
    [
        (34.0, 3),
        (35.0, 3),
        (35.04, 3),
        (35.05, 1),
        (35.1, 1),
        (36.0, 1),
        (36.1, 0),
        (38.0, 0),
        (38.1, 1),
        (39.0, 1),
        (39.1, 2),
        (41.0, 2),
    ],
)
def test_temperature(celsius: float, points: int) -> None:
    assert news2.score_temperature(celsius) == points


def _vitals(**changes: object) -> news2.Vitals:
    base = {
        "respiration_rate": 16,
        "spo2": 97,
        "on_oxygen": False,
        "systolic_bp": 125,
        "pulse": 70,
        "consciousness": "A",
        "temperature": 37.0,
    }
    return news2.Vitals(**{**base, **changes})  # type: ignore[arg-type]


def test_all_normal_is_zero_and_low() -> None:
    result = news2.score(_vitals())
    assert (result.total, result.band, result.single_parameter_3) == (0, "low", False)


@pytest.mark.parametrize(
    ("changes", "total", "band"),
    [
        ({"pulse": 95}, 1, "low"),
        ({"pulse": 95, "temperature": 38.5, "respiration_rate": 10}, 3, "low"),
        ({"respiration_rate": 22, "pulse": 115}, 4, "low"),
        ({"consciousness": "C"}, 3, "low-medium"),  # a single parameter scoring 3
        ({"systolic_bp": 85, "pulse": 95}, 4, "low-medium"),
        ({"respiration_rate": 22, "pulse": 115, "temperature": 38.5}, 5, "medium"),
        ({"consciousness": "V", "respiration_rate": 22, "pulse": 95}, 6, "medium"),
        ({"respiration_rate": 25, "spo2": 93, "pulse": 95, "temperature": 38.5}, 7, "high"),
        (
            {
                "respiration_rate": 26,
                "spo2": 90,
                "on_oxygen": True,
                "systolic_bp": 95,
                "pulse": 125,
                "temperature": 38.6,
            },
            13,
            "high",
        ),
    ],
)
def test_aggregate_bands(changes: dict[str, object], total: int, band: str) -> None:
    result = news2.score(_vitals(**changes))
    assert (result.total, result.band) == (total, band)


def test_scale2_is_used_only_when_chosen() -> None:
    hypercapnic = _vitals(spo2=89)
    assert news2.score(hypercapnic).scores["spo2"] == 3
    assert news2.score(news2.Vitals(**{**hypercapnic.__dict__, "spo2_scale": 2})).scores["spo2"] == 0


def test_scores_name_every_parameter() -> None:
    assert tuple(news2.score(_vitals()).scores) == news2.PARAMETERS
