"""Completing a model's config from the model itself (Triton's auto-complete), and the
config a producer writes for a new model.

The model's own signature (full shapes, -1 for dynamic dims) is reconciled with what the
config states: the config may be stricter than the model, never contradict it.
"""

from __future__ import annotations

from kiln.errors import ConfigError
from kiln.repository.config import DynamicBatchingConfig, ModelConfig, TensorConfig
from kiln.tensors import Signature, TensorSpec, format_shape

#: ``max_batch_size`` given to models whose every tensor has a dynamic first dimension.
DEFAULT_MAX_BATCH_SIZE = 64


def batchable(signature: Signature) -> bool:
    """Whether every tensor of ``signature`` has a dynamic first dimension."""
    return all(s.shape and s.shape[0] == -1 for s in signature.inputs + signature.outputs)


def config_for(signature: Signature, *, name: str, max_batch_size: int | None = None,
               backend: str = "onnxruntime") -> ModelConfig:
    """The config a producer writes for a model of ``signature``: batching on (at
    ``DEFAULT_MAX_BATCH_SIZE`` unless told) when every tensor has a dynamic first dim."""
    if max_batch_size is None:
        max_batch_size = DEFAULT_MAX_BATCH_SIZE if batchable(signature) else 0
    if max_batch_size > 0 and not batchable(signature):
        fixed = [s.name for s in signature.inputs + signature.outputs
                 if not s.shape or s.shape[0] != -1]
        raise ConfigError(
            f"max_batch_size {max_batch_size} needs a dynamic first dimension, but "
            f"{', '.join(fixed)} have a fixed one; use max_batch_size 0"
        )

    def tensor(spec: TensorSpec) -> TensorConfig:
        dims = spec.shape[1:] if max_batch_size else spec.shape
        return TensorConfig(name=spec.name, datatype=spec.datatype, dims=list(dims))

    return ModelConfig(
        name=name, backend=backend, max_batch_size=max_batch_size,
        inputs=[tensor(s) for s in signature.inputs],
        outputs=[tensor(s) for s in signature.outputs],
        dynamic_batching=DynamicBatchingConfig() if max_batch_size else None,
    )


def served_signature(name: str, config: ModelConfig, model: Signature) -> Signature:
    """The signature kiln serves: config fields where given, the model's everywhere else."""
    max_batch = config.max_batch_size
    if max_batch is None:
        max_batch = DEFAULT_MAX_BATCH_SIZE if batchable(model) else 0
    inputs = _reconcile(name, "input", config.inputs, model.inputs, max_batch)
    outputs = _reconcile(name, "output", config.outputs, model.outputs, max_batch)
    return Signature(inputs=inputs, outputs=outputs, max_batch_size=max_batch)


def _reconcile(model_name: str, kind: str, stated: list[TensorConfig] | None,
               actual: tuple[TensorSpec, ...], max_batch: int) -> tuple[TensorSpec, ...]:
    by_name = {s.name: s for s in actual}
    if max_batch > 0:
        for tensor_spec in actual:
            if not tensor_spec.shape or tensor_spec.shape[0] not in (-1,):
                raise ConfigError(
                    f"model '{model_name}': {kind} '{tensor_spec.name}' has shape "
                    f"{tensor_spec.describe_shape()}, so its first dimension cannot be a batch "
                    "dimension; set max_batch_size: 0"
                )
    if stated is None:
        return actual
    result = []
    for tensor in stated:
        spec = by_name.get(tensor.name)
        if spec is None:
            raise ConfigError(
                f"model '{model_name}': config names {kind} '{tensor.name}' but the model's "
                f"{kind}s are {', '.join(sorted(by_name))}"
            )
        shape = (-1, *tensor.dims) if max_batch > 0 else tuple(tensor.dims)
        if tensor.datatype is not spec.datatype:
            raise ConfigError(
                f"model '{model_name}': config gives {kind} '{tensor.name}' datatype "
                f"{tensor.datatype.v2} but the model has {spec.datatype.v2}"
            )
        if spec.shape and not _compatible(shape, spec.shape):
            raise ConfigError(
                f"model '{model_name}': config gives {kind} '{tensor.name}' shape "
                f"{format_shape(shape)} but the model has {spec.describe_shape()}"
            )
        result.append(TensorSpec(tensor.name, tensor.datatype, shape))
    if kind == "input":
        missing = set(by_name) - {t.name for t in stated}
        if missing:
            raise ConfigError(
                f"model '{model_name}': config leaves out input(s) {', '.join(sorted(missing))}; "
                "list every input or none"
            )
    return tuple(result)


def _compatible(stated: tuple[int, ...], actual: tuple[int, ...]) -> bool:
    return len(stated) == len(actual) and all(
        a == -1 or s == a for s, a in zip(stated, actual, strict=True)
    )
