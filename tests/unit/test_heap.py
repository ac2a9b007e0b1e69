"""freeze_startup_heap: what exists at start-up leaves the collector's generations."""

from __future__ import annotations

import gc

from tts_engine.heap import freeze_startup_heap


def test_objects_alive_at_the_freeze_are_not_walked_by_later_collections() -> None:
    long_lived = [{"i": i, "self": None} for i in range(1000)]  # tracked containers
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() >= 1000
        tracked = {id(o) for o in gc.get_objects()}
        assert not any(id(o) in tracked for o in long_lived)
        later = {"allocated after the freeze": []}  # a container, so the GC tracks it
        assert any(o is later for o in gc.get_objects())  # new objects are collected as usual
    finally:
        gc.unfreeze()
