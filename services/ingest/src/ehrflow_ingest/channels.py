"""The topics ingest publishes to, declared for its AsyncAPI document (records go out through ``sink``)."""

from __future__ import annotations

from faststream.kafka import KafkaBroker

from ehrflow_contracts import NotificationQuarantined, NotificationReceived, SubscriptionSignal, topics


def declare(broker: KafkaBroker) -> None:
    broker.publisher(
        topics.NOTIFICATION_RECEIVED,
        schema=NotificationReceived,
        description="One record per notification event, keyed by organization and patient.",
    )
    broker.publisher(
        topics.SUBSCRIPTION_SIGNAL,
        schema=SubscriptionSignal,
        description="Handshakes and heartbeats (subscription liveness).",
    )
    broker.publisher(
        topics.NOTIFICATION_QUARANTINED,
        schema=NotificationQuarantined,
        description="Raw bytes of rejected notifications, kept for inspection.",
    )
