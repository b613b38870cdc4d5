"""ehrflow ingest service: FHIR Subscription notifications in, durable normalized events on Kafka out."""
