"""Triton's ``config.pbtxt``, read into kiln's ``ModelConfig``.

Parsed with protobuf's own text-format parser against kiln's copy of Triton's schema
(``kiln/proto/model_config.proto``); the common fields are translated, and features kiln
does not offer (sequence batching, ensembles) are refused with the reason.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from google.protobuf import text_format

from kiln.errors import ConfigError
from kiln.proto import model_config_pb2 as pb
from kiln.repository.config import ModelConfig, parse_config

_KINDS = {pb.ModelInstanceGroup.KIND_AUTO: "auto", pb.ModelInstanceGroup.KIND_GPU: "gpu",
          pb.ModelInstanceGroup.KIND_CPU: "cpu", pb.ModelInstanceGroup.KIND_MODEL: "auto"}
_UNSUPPORTED = re.compile(r"^\s*(sequence_batching|ensemble_scheduling)\b", re.MULTILINE)
_GRAPH_LEVELS = {-1: "disable", 0: "all", 1: "all", 2: "extended"}


def load_pbtxt_config(path: Path) -> ModelConfig:
    """Read a Triton ``config.pbtxt``; unknown fields are ignored, unsupported ones refused."""
    text = path.read_text(encoding="utf-8")
    # NOTE: protobuf cannot skip unknown fields written as lists, so refuse these by name.
    if found := _UNSUPPORTED.search(text):
        _refuse(path, found.group(1))
    message = pb.ModelConfig()
    try:
        text_format.Parse(text, message, allow_unknown_field=True)
    except text_format.ParseError as exc:
        raise ConfigError(f"{path}: not a valid Triton config.pbtxt: {exc}") from None
    return parse_config(pbtxt_to_dict(message, path), source=path)


def _refuse(path: Path, field: str) -> None:
    raise ConfigError(
        f"{path}: field '{field}': kiln does not support {field.replace('_', ' ')}; "
        "remove it to serve the model without it"
    )


def pbtxt_to_dict(message: pb.ModelConfig, path: Path) -> dict[str, Any]:
    scheduling = message.WhichOneof("scheduling_choice")
    raw: dict[str, Any] = {}
    for field in ("name", "backend", "platform", "default_model_filename"):
        if value := getattr(message, field):
            raw[field] = value
    if message.max_batch_size or message.input or message.output:
        raw["max_batch_size"] = message.max_batch_size
    if message.input:
        raw["inputs"] = [_tensor(t, optional=t.optional) for t in message.input]
    if message.output:
        raw["outputs"] = [_tensor(t) for t in message.output]
    if scheduling == "dynamic_batching":
        raw["dynamic_batching"] = _batching(message.dynamic_batching)
    if message.instance_group:
        group = message.instance_group[0]
        raw["instances"] = {"count": sum(max(g.count, 1) for g in message.instance_group),
                            "kind": _KINDS[group.kind], "gpus": list(group.gpus)}
    policy = message.version_policy.WhichOneof("policy_choice")
    if policy == "latest":
        raw["version_policy"] = {"latest": message.version_policy.latest.num_versions or 1}
    elif policy == "all":
        raw["version_policy"] = {"all": True}
    elif policy == "specific":
        raw["version_policy"] = {"specific": list(message.version_policy.specific.versions)}
    if message.HasField("optimization"):
        raw["optimization"] = _optimization(message.optimization)
    if message.parameters:
        raw["parameters"] = {k: v.string_value for k, v in message.parameters.items()}
    return raw


def _tensor(t: Any, *, optional: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"name": t.name, "datatype": pb.DataType.Name(t.data_type),
                           "dims": list(t.dims)}
    if optional:
        out["optional"] = True
    return out


def _batching(b: pb.ModelDynamicBatching) -> dict[str, Any]:
    policy = b.default_queue_policy
    return {
        "max_queue_delay_us": b.max_queue_delay_microseconds,
        "preferred_batch_sizes": list(b.preferred_batch_size),
        "max_queue_size": policy.max_queue_size,
        "default_timeout_us": policy.default_timeout_microseconds,
        "priority_levels": b.priority_levels,
        "default_priority_level": b.default_priority_level,
    }


def _optimization(o: pb.ModelOptimizationPolicy) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if o.HasField("graph"):
        out["graph_optimization"] = _GRAPH_LEVELS.get(o.graph.level, "all")
    accelerators = [a.name for a in o.execution_accelerators.gpu_execution_accelerator]
    accelerators += [a.name for a in o.execution_accelerators.cpu_execution_accelerator]
    names = {"tensorrt": "TensorrtExecutionProvider", "openvino": "OpenVINOExecutionProvider",
             "cuda": "CUDAExecutionProvider"}
    if accelerators:
        out["execution_providers"] = [names.get(a.lower(), a) for a in accelerators]
    return out


def config_to_proto(name: str, platform: str, backend: str, config: ModelConfig,
                    signature: Any) -> pb.ModelConfig:
    """The effective (auto-completed) config in Triton's shape, for the config endpoints."""
    message = pb.ModelConfig(name=name, platform=platform, backend=backend,
                             max_batch_size=signature.max_batch_size)
    skip = 1 if signature.max_batch_size > 0 else 0
    for spec in signature.inputs:
        message.input.add(name=spec.name, data_type=pb.DataType.Value(spec.datatype.triton),
                          dims=list(spec.shape[skip:]))
    for spec in signature.outputs:
        message.output.add(name=spec.name, data_type=pb.DataType.Value(spec.datatype.triton),
                           dims=list(spec.shape[skip:]))
    kind = {"auto": pb.ModelInstanceGroup.KIND_CPU, "cpu": pb.ModelInstanceGroup.KIND_CPU,
            "gpu": pb.ModelInstanceGroup.KIND_GPU}[config.instances.kind]
    message.instance_group.add(count=config.instances.count, kind=kind,
                               gpus=config.instances.gpus)
    policy = config.version_policy
    if policy.all:
        message.version_policy.all.SetInParent()
    elif policy.specific is not None:
        message.version_policy.specific.versions.extend(policy.specific)
    else:
        message.version_policy.latest.num_versions = policy.latest or 1
    batching = config.dynamic_batching
    if batching is not None:
        dyn = message.dynamic_batching
        dyn.preferred_batch_size.extend(batching.preferred_batch_sizes)
        dyn.max_queue_delay_microseconds = batching.max_queue_delay_us
        dyn.priority_levels = batching.priority_levels
        dyn.default_priority_level = batching.default_priority_level
        dyn.default_queue_policy.max_queue_size = batching.max_queue_size
        dyn.default_queue_policy.default_timeout_microseconds = batching.default_timeout_us
    for key, value in config.parameters.items():
        message.parameters[key].string_value = value
    return message
