"""Runtime plumbing shared by ehrflow services. Importable, never run on its own."""
