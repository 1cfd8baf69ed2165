"""Serving: the transport-neutral core and its protocol adapters."""
