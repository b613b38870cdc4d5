"""An in-memory stand-in for ingest's Kafka sink, for unit tests (the transport boundary).

Records what would have been published, per topic, as the JSON a consumer would read; ``down`` makes
every send fail as an unreachable broker would. Integration tests use a real broker instead.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Awaitable
from typing import Any

from pydantic import BaseModel


class BrokerDown(ConnectionError):
    pass


class MemorySink:
    def __init__(self) -> None:
        self.published: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.keys: dict[str, list[bytes]] = defaultdict(list)
        self.down = False

    async def send(self, topic: str, record: BaseModel, key: bytes) -> Awaitable[object]:
        if self.down:
            raise BrokerDown("the broker is unreachable")
        self.published[topic].append(json.loads(record.model_dump_json()))
        self.keys[topic].append(key)
        acknowledged: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        acknowledged.set_result(None)
        return acknowledged

    async def ready(self) -> bool:
        return not self.down
