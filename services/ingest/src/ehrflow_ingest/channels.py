"""The topics ingest publishes to, declared once for the app and for its AsyncAPI document."""

from __future__ import annotations

from dataclasses import dataclass

from faststream.kafka import KafkaBroker
from faststream.kafka.publisher import DefaultPublisher

from ehrflow_contracts import NotificationQuarantined, NotificationReceived, SubscriptionSignal, topics


@dataclass(frozen=True)
class Publishers:
    events: DefaultPublisher
    signals: DefaultPublisher
    quarantine: DefaultPublisher


def declare(broker: KafkaBroker) -> Publishers:
    return Publishers(
        events=broker.publisher(
            topics.NOTIFICATION_RECEIVED,
            schema=NotificationReceived,
            description="One record per notification event, keyed by organization and patient.",
        ),
        signals=broker.publisher(
            topics.SUBSCRIPTION_SIGNAL,
            schema=SubscriptionSignal,
            description="Handshakes and heartbeats (subscription liveness).",
        ),
        quarantine=broker.publisher(
            topics.NOTIFICATION_QUARANTINED,
            schema=NotificationQuarantined,
            description="Raw bytes of rejected notifications, kept for inspection.",
        ),
    )
