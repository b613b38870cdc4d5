import gc

from ehrflow_runtime.serve import freeze_startup_heap


def test_freezing_moves_the_live_heap_out_of_the_collectors_passes() -> None:
    survivor = {"kept": [1, 2, 3]}
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() > 0
        assert not any(obj is survivor for obj in gc.get_objects())  # a full pass no longer walks it
    finally:
        gc.unfreeze()
