"""The ``kiln`` command: one thin module per command group."""
