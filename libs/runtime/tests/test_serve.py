import asyncio
import gc
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
import uvloop

from ehrflow_runtime.serve import YOUNG_THRESHOLD, server_config, tune_garbage_collector


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


def test_services_are_served_on_uvloop_with_httptools() -> None:
    """What the benchmarks measure; asyncio's loop and h11 are a third of the rate (server_config)."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    config = server_config(lambda scope, receive, send: None, host="127.0.0.1", port=0)  # type: ignore[arg-type]
    config.load()
    assert config.http_protocol_class is HttpToolsProtocol
    factory = config.get_loop_factory()
    assert factory is not None
    loop = factory()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


async def test_beyond_its_concurrency_the_server_answers_503_at_once() -> None:
    """A real uvicorn as the services run it, with room for one connection (uvicorn counts the arriving one
    too): while its request hangs, the next is refused instead of queued, so a flood of slow clients
    cannot hold memory without bound."""
    entered, release = asyncio.Event(), asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        entered.set()
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    config = server_config(app, host="127.0.0.1", port=0, max_concurrency=2)  # this connection counts too
    config.lifespan = "off"
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as first,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as second,
        ):
            hanging = asyncio.create_task(first.get("/"))
            await entered.wait()
            refused = await second.get("/")
            assert refused.status_code == 503
            release.set()
            assert (await hanging).status_code == 200
    finally:
        server.should_exit = True
        await serving
