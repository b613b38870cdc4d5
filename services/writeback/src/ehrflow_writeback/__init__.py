"""ehrflow writeback service: review queue, clinician decisions, idempotent writes to the EHR."""
