#!/usr/bin/env bash
# Installs the benchmark's peer servers into their own virtualenv (benchmarks/peers/.venv),
# apart from kiln's: PyTriton pip-installs a real Triton server (about 1 GB) that kiln does
# not need. benchmarks/serving.py runs them when asked for the pytriton-* targets.
#
#     bash benchmarks/peers/setup.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-python3}"
"$python" -m venv "$here/.venv"
"$here/.venv/bin/pip" install -q "nvidia-pytriton==0.7.0" onnxruntime numpy
"$here/.venv/bin/python" -c "import pytriton, onnxruntime; print('peers ready:', onnxruntime.__version__)"
