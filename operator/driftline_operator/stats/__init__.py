"""Drift statistics computed from mergeable bin counts (pure: no kopf, no kubernetes)."""
