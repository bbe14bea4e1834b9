"""The operator process: kopf handlers (`handlers`, the only module that
imports kopf), the per-monitor loop (`loop`), status (`status`), the objects
it owns (`manifests`), TLS, admin tokens, settings and the entry point."""
