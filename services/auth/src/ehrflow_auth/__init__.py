"""ehrflow auth service: per-organization SMART Backend Services tokens, JWKS, a shared token cache."""
