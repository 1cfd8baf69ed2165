"""ONNX Runtime backend.

NOTE: ONNX Runtime's Python binding takes string tensors as Python ``str`` and cuts numpy
``S`` arrays at the first NUL byte. kiln's BYTES tensors are object arrays of ``bytes``, so
this module decodes them as UTF-8 on the way in (ONNX strings are UTF-8 text) and encodes
them on the way out; NUL bytes survive both ways.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from kiln.errors import InternalError, InvalidArgument, KilnError
from kiln.runtime.base import ModelArtifact, SessionOptions, VersionFiles
from kiln.runtime.onnx_admission import admit_onnx
from kiln.tensors import DataType, Signature, TensorDict, TensorSpec

log = logging.getLogger("kiln.runtime.onnx")

_GRAPH_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
                 "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


class OnnxRuntimeBackend:
    """Runs ``model.onnx`` files with ONNX Runtime."""

    name = "onnxruntime"
    platform = "onnxruntime_onnx"
    default_filename = "model.onnx"

    def admit(self, files: VersionFiles, filename: str,
              options: SessionOptions) -> ModelArtifact:
        return admit_onnx(files, filename)

    def load(self, artifact: ModelArtifact, options: SessionOptions) -> OnnxSession:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = options.intra_op_threads
        so.inter_op_num_threads = options.inter_op_threads
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = getattr(
            ort.GraphOptimizationLevel, _GRAPH_LEVELS[options.graph_optimization]
        )
        so.log_severity_level = 3
        if not options.allow_spinning:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = choose_providers(options.execution_providers, ort.get_available_providers())
        if artifact.content is not None:
            # Bytes have no folder: external data resolves against the model's own folder.
            so.add_session_config_entry(
                "session.model_external_initializers_file_folder_path", str(artifact.path.parent))
        source = artifact.content if artifact.content is not None else str(artifact.path)
        session = ort.InferenceSession(source, sess_options=so, providers=providers)
        used = session.get_providers()
        log.info("loaded %s with execution providers %s", artifact.path, ", ".join(used))
        return OnnxSession(session)


def choose_providers(wanted: Sequence[str], available: Sequence[str]) -> list[str]:
    """The wanted providers that this ONNX Runtime build has, always ending with the CPU."""
    chosen = [p for p in wanted if p in available]
    missing = [p for p in wanted if p not in available]
    if missing:
        log.warning("execution providers %s are not available here; using %s",
                    ", ".join(missing), ", ".join([*chosen, "CPUExecutionProvider"]))
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


class OnnxSession:
    """One ``onnxruntime.InferenceSession``; ``run`` is thread-safe and releases the GIL."""

    def __init__(self, session: Any) -> None:  # an onnxruntime.InferenceSession (untyped)
        self._session = session
        self._signature = Signature(
            inputs=tuple(_spec(i) for i in session.get_inputs()),
            outputs=tuple(_spec(o) for o in session.get_outputs()),
        )
        self._string_inputs = {s.name for s in self._signature.inputs
                               if s.datatype is DataType.BYTES}

    @property
    def signature(self) -> Signature:
        return self._signature

    @property
    def providers(self) -> Sequence[str]:
        providers: list[str] = self._session.get_providers()
        return providers

    def run(self, inputs: TensorDict, output_names: Sequence[str] | None = None) -> TensorDict:
        feed = {name: (_to_str(name, value) if name in self._string_inputs else value)
                for name, value in inputs.items()}
        names = list(output_names) if output_names else [s.name for s in self._signature.outputs]
        try:
            results = self._session.run(names, feed)
        except Exception as exc:
            raise _translate(exc) from exc
        return {name: (_to_bytes(value) if value.dtype.kind in "OU" else value)
                for name, value in zip(names, results, strict=True)}

    def close(self) -> None:
        self._session = None


def _spec(node: Any) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else -1 for d in (node.shape or ()))
    return TensorSpec(node.name, DataType.from_onnx(node.type), shape)


def _to_str(name: str, value: np.ndarray) -> np.ndarray:
    out = np.empty(value.shape, dtype=object)
    flat_in, flat_out = value.reshape(-1), out.reshape(-1)
    for i, item in enumerate(flat_in):
        if isinstance(item, bytes | bytearray | memoryview):
            try:
                flat_out[i] = bytes(item).decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidArgument(
                    f"input '{name}' element {i} is not UTF-8 text; ONNX string tensors "
                    "hold UTF-8 text only"
                ) from None
        else:
            flat_out[i] = str(item)
    return out


def _to_bytes(value: np.ndarray) -> np.ndarray:
    out = np.empty(value.shape, dtype=object)
    flat_out = out.reshape(-1)
    for i, item in enumerate(value.reshape(-1)):
        flat_out[i] = item.encode("utf-8") if isinstance(item, str) else bytes(item)
    return out


def _translate(exc: Exception) -> KilnError:
    """ONNX Runtime's errors, mapped once: bad input data is the caller's, the rest is ours."""
    if isinstance(exc, KilnError):
        return exc
    invalid = type(exc).__name__ in ("InvalidArgument", "InvalidGraph")
    if invalid or "invalid dimensions" in str(exc).lower():
        return InvalidArgument(f"the model refused the input: {exc}")
    return InternalError(f"ONNX Runtime failed: {exc}")
