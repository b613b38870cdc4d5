import asyncio

from ehrflow_ingest.batching import Batcher


class Store:
    """Records each write; a write takes one round trip (``reply``), as a Redis call does."""

    def __init__(self, *, answers: bool = False) -> None:
        self.writes: list[tuple[str, list[int]]] = []
        self.reply = asyncio.Event()
        self.answers = answers
        """Whether every write is answered at once (else each waits for ``reply``)."""

    async def write(self, key: str, items: list[int]) -> None:
        self.writes.append((key, items))
        if not self.answers:
            await self.reply.wait()
            self.reply.clear()


async def test_items_arriving_during_a_write_go_together_into_the_next() -> None:
    store = Store()
    batcher: Batcher[str, int] = Batcher("test", store.write)
    batcher.add("a", 1)
    await asyncio.sleep(0)  # the writer takes item 1 at once and waits for its reply
    assert store.writes == [("a", [1])]
    for n in (2, 3, 4):
        batcher.add("a", n)
    store.reply.set()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert store.writes == [("a", [1]), ("a", [2, 3, 4])]
    store.reply.set()
    await batcher.flush()


async def test_keys_are_written_separately_and_in_arrival_order() -> None:
    store = Store(answers=True)
    batcher: Batcher[str, int] = Batcher("test", store.write)
    for key, n in (("a", 1), ("b", 2), ("a", 3)):
        batcher.add(key, n)
    await batcher.flush()
    assert sorted(store.writes) == [("a", [1, 3]), ("b", [2])]


async def test_a_linger_gathers_what_arrives_within_it_into_one_write() -> None:
    store = Store(answers=True)
    batcher: Batcher[str, int] = Batcher("test", store.write, linger_s=0.05)
    batcher.add("a", 1)
    await asyncio.sleep(0.01)
    assert store.writes == []  # still lingering
    batcher.add("a", 2)
    await batcher.flush()
    assert store.writes == [("a", [1, 2])]


async def test_a_failed_write_does_not_stop_the_next() -> None:
    writes: list[list[int]] = []

    async def flaky(_: str, items: list[int]) -> None:
        writes.append(items)
        if len(writes) == 1:
            raise ConnectionError("store down")

    batcher: Batcher[str, int] = Batcher("test", flaky)
    batcher.add("a", 1)
    await batcher.flush()
    batcher.add("a", 2)
    await batcher.flush()
    assert writes == [[1], [2]]
