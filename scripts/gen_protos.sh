#!/usr/bin/env bash
# Regenerates the committed protobuf/gRPC modules from src/kiln/proto/*.proto.
# Needs grpcio-tools (pip install grpcio-tools); run from the repository root.
set -euo pipefail
cd "$(dirname "$0")/../src"
python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. kiln/proto/*.proto
