"""``python -m ehrflow_runtime.create_topics``: create every ehrflow topic that is missing, then exit.

What the Helm chart's topic Job runs (any service image has it) when the services should not create
topics themselves. It reads the same ``EHRFLOW_KAFKA__*`` settings as the services (bootstrap, TLS, SASL,
partitions, replication factor, record size) and creates ``ehrflow_contracts.topics.ALL``.
"""

from __future__ import annotations

import asyncio
import logging

from pydantic_settings import BaseSettings, SettingsConfigDict

from ehrflow_contracts import topics
from ehrflow_runtime.broker import ensure_topics
from ehrflow_runtime.logging import configure_logging
from ehrflow_runtime.settings import KafkaSettings


class TopicSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EHRFLOW_", env_nested_delimiter="__", extra="ignore")

    kafka: KafkaSettings = KafkaSettings()
    log_level: str = "INFO"


def main() -> None:
    settings = TopicSettings()
    configure_logging(settings.log_level)
    kafka = settings.kafka.model_copy(update={"create_topics": True})
    asyncio.run(ensure_topics(kafka, topics.ALL))
    logging.getLogger("ehrflow.create-topics").info("topics in place", extra={"count": len(topics.ALL)})


if __name__ == "__main__":
    main()
