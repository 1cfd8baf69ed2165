#!/usr/bin/env bash
# Installs the benchmark's peer servers into their own virtualenv (benchmarks/peers/.venv),
# apart from kiln's: they are an optional extra of the benchmark, not of kiln.
#   - PyTriton 0.7.0 pip-installs a real Triton Inference Server (2.51, about 450 MB).
#   - TorchServe 0.12.0 needs Java 11+ (`apt-get install openjdk-17-jre-headless`) and
#     torch; torch is pinned to the 2.13.0 CPU build (unpinned, pip pulls a CUDA build of
#     several GB). pyyaml: TorchServe's workers import it without declaring it.
# benchmarks/serving.py starts them for its pytriton-* and torchserve-http targets.
#
#     bash benchmarks/peers/setup.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-python3}"
"$python" -m venv "$here/.venv"
"$here/.venv/bin/pip" install -q "nvidia-pytriton==0.7.0" onnxruntime numpy \
    "torch==2.13.0" "torchserve==0.12.0" "torch-model-archiver==0.12.0" pyyaml
"$here/.venv/bin/python" -c "import pytriton, ts, onnxruntime; print('peers ready')"
command -v java >/dev/null || echo "TorchServe needs Java: apt-get install openjdk-17-jre-headless"
