import gc
from collections.abc import Iterator
from typing import Any

import pytest

from ehrflow_runtime.serve import YOUNG_THRESHOLD, tune_garbage_collector


@pytest.fixture
def tuned() -> Iterator[None]:
    threshold = gc.get_threshold()
    try:
        tune_garbage_collector()
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_freezing_moves_the_live_heap_out_of_the_collectors_passes(tuned: None) -> None:
    survivor = {"kept": [1, 2, 3]}
    tune_garbage_collector()  # again, now that the survivor exists
    assert gc.get_freeze_count() > 0
    assert not any(obj is survivor for obj in gc.get_objects())  # a full pass no longer walks it


def test_the_young_generation_waits_for_many_allocations(tuned: None) -> None:
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD
    passes: list[int] = []

    def count(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            passes.append(info["generation"])

    gc.callbacks.append(count)
    try:
        kept = [[] for _ in range(YOUNG_THRESHOLD // 2)]  # live objects: no pass yet
        assert passes == []
        for _ in range(YOUNG_THRESHOLD):  # garbage cycles pile up: a pass runs and collects them
            cycle: list[Any] = []
            cycle.append(cycle)
        assert passes, "a reference cycle must still be collected without an explicit gc.collect()"
    finally:
        gc.callbacks.remove(count)
    del kept
