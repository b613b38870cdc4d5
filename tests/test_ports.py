"""The local stack's ports: below the kernel's ephemeral range, and a share of their own per xdist worker."""

from __future__ import annotations

import pytest

from ehrflow_devstack.processes import _ephemeral_range, _port_range


def test_workers_choose_from_ranges_that_do_not_meet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    ranges = []
    for worker in ("gw0", "gw1"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        ranges.append(_port_range())
    (a_first, a_last), (b_first, b_last) = ranges
    assert 10_000 == a_first <= a_last < b_first <= b_last < _ephemeral_range()[0]
    assert a_last - a_first > 5_000


def test_one_process_has_the_whole_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    assert _port_range() == (10_000, min(_ephemeral_range()[0], 49152) - 1)
