"""What one notification may cost: a bound on its events and on the bytes its records put on the bus.

The body limit alone does not bound the cost. A topic-based notification includes a resource once and
may name it as the focus of any number of events, and each event's record carries a copy: a 0.52 MB body
(one 200 KB Observation, 2,000 events) made 2,000 records and 402 MB on the bus. So an authenticated
sender's notification is refused with 413 when it lists more than ``max_events`` events, or when the
resources its records would carry add up to more than the body limit, which no notification that
includes each resource for one event can exceed.
"""

from __future__ import annotations

import json

from ehrflow_ingest.notifications import NotificationError, ParsedNotification


class TooCostly(NotificationError):
    """The notification is valid but would cost more than one notification may (413)."""


def check(note: ParsedNotification, *, max_events: int, max_bus_bytes: int) -> None:
    """Raise TooCostly with a precise message, or return."""
    if len(note.events) < 2:  # one event carries at most one copy of what the body held: the usual case,
        return  # and on every notification's path (the loop below cost it ~8,000 instructions)
    if len(note.events) > max_events:
        raise TooCostly(f"the notification lists {len(note.events)} events; at most {max_events} are accepted")
    carried: dict[int, int] = {}
    for event in note.events:
        if event.resource is not None:
            carried[id(event.resource)] = carried.get(id(event.resource), 0) + 1
    if all(count == 1 for count in carried.values()):
        return  # each resource rides once: the records hold no more than the body did (the usual case)
    sizes = {id(e.resource): e.resource for e in note.events if e.resource is not None}
    total = sum(len(json.dumps(resource).encode()) * carried[key] for key, resource in sizes.items())
    if total > max_bus_bytes:
        raise TooCostly(
            f"its events would copy {total} bytes of included resources onto the bus (a resource is copied "
            f"into every event that names it); at most {max_bus_bytes} are accepted"
        )
