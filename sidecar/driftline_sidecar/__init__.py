"""Driftline's sidecar: a reverse proxy that counts what a model sees and answers."""
