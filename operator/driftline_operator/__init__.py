"""Driftline's operator: merges what the sidecars counted and judges it."""
