"""TorchServe handler for the benchmark: KServe V2 JSON in, ONNX Runtime on the batch, V2 JSON out.

Packed into the model archive by ``benchmarks/peers/launch.py`` with ``ort_session.py`` and
the ONNX file. TorchServe's frontend routes ``POST /v2/models/NAME/infer`` to the model and
batches requests (``batchSize`` / ``maxBatchDelay`` in the archive's model-config.yaml);
this handler gets one body per request, runs them as one ONNX Runtime batch and answers each
with its own rows. (TorchServe's bundled ``kservev2`` envelope reads only the first request
of a batch, so it cannot batch.) The ONNX Runtime settings come from the same
``ort_session.session`` that kiln's in-process point uses; ``handler: {intra_op_threads: N}``
in model-config.yaml sets the thread count.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
from ort_session import session

#: KServe V2 datatypes to numpy, for the tensors the benchmark models use.
V2_TYPES: dict[str, type[np.generic]] = {
    "FP32": np.float32, "FP64": np.float64, "FP16": np.float16, "INT64": np.int64,
    "INT32": np.int32, "INT8": np.int8, "UINT8": np.uint8, "BOOL": np.bool_,
}
NUMPY_TYPES = {np.dtype(t): name for name, t in V2_TYPES.items()}


class OnnxV2Handler:
    """TorchServe's class entry point: ``initialize(context)``, then ``handle`` per batch."""

    def initialize(self, context: Any) -> None:
        model_dir = Path(context.system_properties["model_dir"])
        threads = int(context.model_yaml_config.get("handler", {}).get("intra_op_threads", 1))
        self.model_name = context.manifest["model"]["modelName"]
        self.session = session(next(model_dir.glob("*.onnx")), threads)
        self.outputs = [o.name for o in self.session.get_outputs()]

    def handle(self, data: list[dict[str, Any]], context: Any) -> list[str]:
        """One response body per request, in the order TorchServe gave them."""
        bodies = [row.get("body") or row.get("data") for row in data]
        requests = [b if isinstance(b, dict) else json.loads(b) for b in bodies]
        columns: dict[str, list[np.ndarray]] = {}
        for request in requests:
            for tensor in request["inputs"]:
                value = np.asarray(tensor["data"], V2_TYPES[tensor["datatype"]])
                columns.setdefault(tensor["name"], []).append(value.reshape(tensor["shape"]))
        feed = {name: np.concatenate(values) for name, values in columns.items()}
        results = self.session.run(self.outputs, feed)
        rows = np.cumsum([0] + [len(v) for v in next(iter(columns.values()))])
        return [json.dumps({"model_name": self.model_name, "outputs": [
                    {"name": name, "datatype": NUMPY_TYPES[result.dtype],
                     "shape": list(result[start:end].shape),
                     "data": result[start:end].ravel().tolist()}
                    for name, result in zip(self.outputs, results, strict=True)]})
                for start, end in itertools.pairwise(rows)]
