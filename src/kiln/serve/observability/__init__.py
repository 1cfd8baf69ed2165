"""Seeing into the server: Prometheus metrics, the request log, tracing, log settings."""
