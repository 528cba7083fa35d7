"""Evaluations, one file each, registered by name (imported by the registry)."""
