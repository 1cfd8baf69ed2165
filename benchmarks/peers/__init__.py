"""Other model servers run side by side with kiln by ``benchmarks/serving.py``.

They live in their own virtualenv (``bash benchmarks/peers/setup.sh``), not in kiln's.
"""
