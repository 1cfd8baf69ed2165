"""Serving: the transport-neutral core (data plane, registry, batching) and its protocol adapters."""
