"""OpenVINO backend: runs ``model.onnx`` on the CPU.

OpenVINO is the fastest int8 engine on Intel/AMD AVX-512 VNNI CPUs; choose it per model in
its ``config.yaml`` (``backend: openvino``). The session compiles the model once (one stream,
``intra_op_threads`` threads) and keeps one infer request per calling thread, so concurrent
``run`` calls are safe; they take turns on the stream, and the dynamic batcher is what merges
concurrent requests into one execution. Inference precision is
FP32 (``INFERENCE_PRECISION_HINT=f32``), so an FP32 model gives ONNX Runtime's results and an
int8 model runs its int8 kernels. Needs ``pip install 'kiln-ml[openvino]'``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from kiln.errors import ConfigError, InternalError, InvalidArgument, KilnError
from kiln.runtime.base import ModelArtifact, SessionOptions, VersionFiles
from kiln.runtime.onnx_admission import admit_onnx
from kiln.tensors import DataType, Signature, TensorDict, TensorSpec

log = logging.getLogger("kiln.runtime.openvino")
_INSTALL = "pip install 'kiln-ml[openvino]'"


class OpenVinoBackend:
    """Runs ONNX files with OpenVINO Runtime on the CPU."""

    name = "openvino"
    platform = "openvino"
    default_filename = "model.onnx"

    def admit(self, files: VersionFiles, filename: str,
              options: SessionOptions) -> ModelArtifact:
        """ONNX files, checked as for ONNX Runtime."""
        return admit_onnx(files, filename)

    def load(self, artifact: ModelArtifact, options: SessionOptions) -> OpenVinoSession:
        ov = _openvino()
        core = ov.Core()
        if artifact.content is not None:  # admitted ONNX bytes (decrypted, when sealed)
            # NOTE: read_model, not convert_model: the latter transforms the graph
            # differently and an int8 model's results would differ from the file's.
            model = core.read_model(artifact.content)
        else:
            model = core.read_model(str(artifact.path))
        config = {"INFERENCE_NUM_THREADS": options.intra_op_threads or 0,
                  "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_PRECISION_HINT": "f32"}
        compiled = core.compile_model(model, "CPU", config)
        log.info("loaded %s with OpenVINO %s", artifact.path, ov.get_version())
        return OpenVinoSession(compiled)


def _openvino() -> Any:
    try:
        import openvino
    except ImportError:
        raise ConfigError(f"the openvino backend needs OpenVINO: {_INSTALL}") from None
    return openvino


class OpenVinoSession:
    """One compiled OpenVINO model; each calling thread gets its own infer request."""

    def __init__(self, compiled: Any) -> None:
        self._compiled = compiled
        self._local = threading.local()
        self._signature = Signature(inputs=tuple(_spec(p) for p in compiled.inputs),
                                    outputs=tuple(_spec(p) for p in compiled.outputs))
        self._ports = {p.get_any_name(): p for p in compiled.outputs}

    @property
    def signature(self) -> Signature:
        return self._signature

    @property
    def providers(self) -> Sequence[str]:
        return ["OpenVINO CPU"]

    def run(self, inputs: TensorDict, output_names: Sequence[str] | None = None) -> TensorDict:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        names = list(output_names) if output_names else list(self._ports)
        try:
            results = request.infer(dict(inputs), share_inputs=False, share_outputs=False)
        except Exception as exc:  # OpenVINO raises RuntimeError for bad shapes and faults
            raise _translate(exc) from exc
        return {name: np.asarray(results[self._ports[name]]) for name in names}

    def close(self) -> None:
        self._compiled = None
        self._local = threading.local()


def _spec(port: Any) -> TensorSpec:
    shape = tuple(d.get_length() if d.is_static else -1 for d in port.get_partial_shape())
    dtype = np.dtype(port.get_element_type().to_dtype())
    return TensorSpec(port.get_any_name(), DataType.from_numpy(dtype), shape)


def _translate(exc: Exception) -> KilnError:
    text = str(exc)
    if any(word in text.lower() for word in ("shape", "dimension", "precision", "type")):
        return InvalidArgument(f"the model refused the input: {text.splitlines()[0]}")
    return InternalError(f"OpenVINO failed: {text.splitlines()[0] if text else exc!r}")
