"""ehrflow inference service: events in, workflow contracts applied, model drafts out."""
