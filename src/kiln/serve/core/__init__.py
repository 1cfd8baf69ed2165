"""The transport-neutral serving core: data plane, registry, model versions, batching."""
