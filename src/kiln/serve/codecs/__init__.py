"""Pure wire <-> TensorDict codecs; no I/O, no runtime, no web framework."""
