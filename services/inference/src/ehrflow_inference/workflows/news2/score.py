"""NEWS2, exactly as the Royal College of Physicians chart scores it (NEWS2, RCP 2017, chart 1).

Pure functions. Values are first rounded to the chart's resolution (whole numbers; temperature to one
decimal, half up), because the chart's bands are whole-number (or 0.1 °C) ranges with no gaps between them.

| parameter            | 3      | 2       | 1         | 0                     | 1            | 2           | 3           |
|----------------------|--------|---------|-----------|-----------------------|--------------|-------------|-------------|
| respiration /min     | ≤8     |         | 9–11      | 12–20                 |              | 21–24       | ≥25         |
| SpO2 scale 1 %       | ≤91    | 92–93   | 94–95     | ≥96                   |              |             |             |
| SpO2 scale 2 %       | ≤83    | 84–85   | 86–87     | 88–92, ≥93 on air     | 93–94 on O2  | 95–96 on O2 | ≥97 on O2   |
| air or oxygen        |        | oxygen  |           | air                   |              |             |             |
| systolic BP mmHg     | ≤90    | 91–100  | 101–110   | 111–219               |              |             | ≥220        |
| pulse /min           | ≤40    |         | 41–50     | 51–90                 | 91–110       | 111–130     | ≥131        |
| consciousness        |        |         |           | Alert                 |              |             | CVPU        |
| temperature °C       | ≤35.0  |         | 35.1–36.0 | 36.1–38.0             | 38.1–39.0    | ≥39.1       |             |

Clinical risk: aggregate 0–4 low; a 3 in any single parameter (with an aggregate of 1–4) low-medium;
5–6 medium; 7 or more high.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

Consciousness = Literal["A", "C", "V", "P", "U"]
Band = Literal["low", "low-medium", "medium", "high"]
SpO2Scale = Literal[1, 2]

PARAMETERS = ("respiration_rate", "spo2", "air_or_oxygen", "systolic_bp", "pulse", "consciousness", "temperature")


@dataclass(frozen=True)
class Vitals:
    respiration_rate: float
    spo2: float
    on_oxygen: bool
    systolic_bp: float
    pulse: float
    consciousness: Consciousness
    temperature: float
    spo2_scale: SpO2Scale = 1


@dataclass(frozen=True)
class News2Result:
    total: int
    band: Band
    scores: dict[str, int]

    @property
    def single_parameter_3(self) -> bool:
        return any(s == 3 for s in self.scores.values())


def _whole(value: float) -> int:
    return int(Decimal(str(value)).quantize(Decimal("1"), rounding=ROUND_HALF_UP))


def _tenth(value: float) -> Decimal:
    return Decimal(str(value)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


def score_respiration_rate(rate: float) -> int:
    r = _whole(rate)
    if r <= 8:
        return 3
    if r <= 11:
        return 1
    if r <= 20:
        return 0
    if r <= 24:
        return 2
    return 3


def score_spo2_scale1(spo2: float) -> int:
    s = _whole(spo2)
    if s <= 91:
        return 3
    if s <= 93:
        return 2
    if s <= 95:
        return 1
    return 0


def score_spo2_scale2(spo2: float, on_oxygen: bool) -> int:
    """Scale 2 (target 88–92%, e.g. hypercapnic respiratory failure): high values score only on oxygen."""
    s = _whole(spo2)
    if s <= 83:
        return 3
    if s <= 85:
        return 2
    if s <= 87:
        return 1
    if s <= 92 or not on_oxygen:
        return 0
    if s <= 94:
        return 1
    if s <= 96:
        return 2
    return 3


def score_air_or_oxygen(on_oxygen: bool) -> int:
    return 2 if on_oxygen else 0


def score_systolic_bp(systolic: float) -> int:
    s = _whole(systolic)
    if s <= 90:
        return 3
    if s <= 100:
        return 2
    if s <= 110:
        return 1
    if s <= 219:
        return 0
    return 3


def score_pulse(pulse: float) -> int:
    p = _whole(pulse)
    if p <= 40:
        return 3
    if p <= 50:
        return 1
    if p <= 90:
        return 0
    if p <= 110:
        return 1
    if p <= 130:
        return 2
    return 3


def score_consciousness(level: Consciousness) -> int:
    return 0 if level == "A" else 3


def score_temperature(celsius: float) -> int:
    t = _tenth(celsius)
    if t <= Decimal("35.0"):
        return 3
    if t <= Decimal("36.0"):
        return 1
    if t <= Decimal("38.0"):
        return 0
    if t <= Decimal("39.0"):
        return 1
    return 2


def band(total: int, single_parameter_3: bool) -> Band:
    if total >= 7:
        return "high"
    if total >= 5:
        return "medium"
    if single_parameter_3:
        return "low-medium"
    return "low"


def score(v: Vitals) -> News2Result:
    spo2 = score_spo2_scale2(v.spo2, v.on_oxygen) if v.spo2_scale == 2 else score_spo2_scale1(v.spo2)
    scores = {
        "respiration_rate": score_respiration_rate(v.respiration_rate),
        "spo2": spo2,
        "air_or_oxygen": score_air_or_oxygen(v.on_oxygen),
        "systolic_bp": score_systolic_bp(v.systolic_bp),
        "pulse": score_pulse(v.pulse),
        "consciousness": score_consciousness(v.consciousness),
        "temperature": score_temperature(v.temperature),
    }
    total = sum(scores.values())
    return News2Result(total, band(total, any(s == 3 for s in scores.values())), scores)


def predict(inputs: dict[str, Any]) -> dict[str, Any]:
    """The builtin model's entry point (``model.entry_point`` in the NEWS2 contract): the seven parameters and
    the SpO2 scale in, the aggregate score, its band and each parameter's score out."""
    result = score(Vitals(**inputs))
    return {"total": result.total, "band": result.band, "scores": result.scores}
