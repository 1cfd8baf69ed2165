"""KServe V2 gRPC messages <-> transport-neutral requests and responses.

Tensor data travels one of two ways, never both in one request: typed ``contents`` (the
repeated field that matches the datatype) or ``raw_input_contents`` (little-endian bytes,
one entry per input, BYTES elements length-prefixed; decoded as zero-copy numpy views).
FP16 and BF16 have no typed field, so they travel only raw. A response answers in the form
its request used (tritonclient always sends raw), and raw whenever an output has no typed
field.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

import numpy as np

from kiln.errors import InvalidArgument
from kiln.proto import grpc_service_pb2 as pb
from kiln.serve.codecs.binary import decode_tensor, element_bytes, encode_tensor
from kiln.serve.codecs.checks import check_int_range, check_shape, count_elements, parse_datatype
from kiln.serve.codecs.limits import DecodeLimits
from kiln.serve.messages import (
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    Parameters,
    RequestedOutput,
    ServerMetadata,
)
from kiln.tensors import DataType, TensorSpec, format_shape

#: The ``InferTensorContents`` field that carries each datatype, and its element type.
CONTENTS: dict[DataType, tuple[str, str]] = {
    DataType.BOOL: ("bool_contents", "bool"),
    DataType.INT8: ("int_contents", "int32"),
    DataType.INT16: ("int_contents", "int32"),
    DataType.INT32: ("int_contents", "int32"),
    DataType.INT64: ("int64_contents", "int64"),
    DataType.UINT8: ("uint_contents", "uint32"),
    DataType.UINT16: ("uint_contents", "uint32"),
    DataType.UINT32: ("uint_contents", "uint32"),
    DataType.UINT64: ("uint64_contents", "uint64"),
    DataType.FP32: ("fp32_contents", "float32"),
    DataType.FP64: ("fp64_contents", "float64"),
    DataType.BYTES: ("bytes_contents", "object"),
}

_INT64_MAX = (1 << 63) - 1


def decode_infer_request(message: pb.ModelInferRequest, *,
                         limits: DecodeLimits) -> InferenceRequest:
    """Decode a ``ModelInferRequest``; raises ``InvalidArgument`` naming the field at fault."""
    if not message.model_name:
        raise InvalidArgument("field 'model_name' is required")
    if not message.inputs:
        raise InvalidArgument("field 'inputs' must hold at least one input tensor")
    raw = message.raw_input_contents
    if raw:
        _check_raw_layout(message)
    inputs: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(message.inputs):
        if not tensor.name:
            raise InvalidArgument(f"inputs[{index}] needs a name")
        if tensor.name in inputs:
            raise InvalidArgument(f"input '{tensor.name}' appears twice in the request")
        inputs[tensor.name] = _decode_input(tensor, raw[index] if raw else None, limits)
    outputs = [RequestedOutput(o.name, decode_parameters(o.parameters, f"output '{o.name}'"))
               for o in message.outputs]
    return InferenceRequest(
        model_name=message.model_name, model_version=message.model_version or None,
        id=message.id or None, parameters=decode_parameters(message.parameters, "request"),
        inputs=inputs, outputs=outputs or None,
    )


def _check_raw_layout(message: pb.ModelInferRequest) -> None:
    for tensor in message.inputs:
        if tensor.HasField("contents"):
            raise InvalidArgument(
                f"input '{tensor.name}' has typed contents while the request also sends "
                "raw_input_contents; send every input one way, never both"
            )
    if len(message.raw_input_contents) != len(message.inputs):
        raise InvalidArgument(
            f"the request has {len(message.inputs)} input(s) but "
            f"{len(message.raw_input_contents)} raw_input_contents entries; send one entry "
            "per input, in the order of 'inputs'"
        )


def _decode_input(tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes | None,
                  limits: DecodeLimits) -> np.ndarray:
    what = f"input '{tensor.name}'"
    datatype = parse_datatype(tensor.datatype, what)
    shape = check_shape(list(tensor.shape), what, limits)
    count = count_elements(shape, what, limits)
    if raw is not None:
        return decode_tensor(raw, datatype, shape, count, what=what)
    return _decode_contents(tensor.contents, datatype, shape, count, what)


def _decode_contents(contents: pb.InferTensorContents, datatype: DataType,
                     shape: tuple[int, ...], count: int, what: str) -> np.ndarray:
    entry = CONTENTS.get(datatype)
    if entry is None:
        raise InvalidArgument(
            f"{what}: {datatype.v2} has no typed contents; send it in raw_input_contents"
        )
    field, wire = entry
    for descriptor, _ in contents.ListFields():
        if descriptor.name != field:
            raise InvalidArgument(
                f"{what} is {datatype.v2} but sends {descriptor.name}; {datatype.v2} data goes "
                f"in {field}"
            )
    values = getattr(contents, field)
    if len(values) != count:
        raise InvalidArgument(
            f"{what} declares shape {format_shape(shape)} ({count} elements) but {field} "
            f"holds {len(values)}"
        )
    if datatype is DataType.BYTES:
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array.reshape(shape)
    array = np.array(values, dtype=wire)
    if array.dtype != datatype.numpy:
        check_int_range(array, datatype, what)
        array = array.astype(datatype.numpy)
    return array.reshape(shape)


def decode_parameters(parameters: Mapping[str, pb.InferParameter], what: str) -> Parameters:
    """A protobuf parameter map -> ``{key: bool | int | float | str}``."""
    result: Parameters = {}
    for key, value in parameters.items():
        choice = value.WhichOneof("parameter_choice")
        if choice is None:
            raise InvalidArgument(f"{what} parameter '{key}' has no value")
        result[key] = getattr(value, choice)
    return result


def encode_parameters(parameters: Parameters,
                      target: MutableMapping[str, pb.InferParameter]) -> None:
    """Write ``{key: bool | int | float | str}`` into a protobuf parameter map."""
    for key, value in parameters.items():
        slot = target[key]
        if isinstance(value, bool):
            slot.bool_param = value
        elif isinstance(value, int):
            if value > _INT64_MAX:
                slot.uint64_param = value
            else:
                slot.int64_param = value
        elif isinstance(value, float):
            slot.double_param = value
        else:
            slot.string_param = str(value)


def encode_infer_response(response: InferenceResponse, *, raw: bool) -> pb.ModelInferResponse:
    """Encode a response; ``raw`` when the request used raw contents (forced for FP16/BF16)."""
    message = pb.ModelInferResponse(model_name=response.model_name,
                                    model_version=response.model_version, id=response.id or "")
    encode_parameters(response.parameters, message.parameters)
    outputs = [(name, array, DataType.from_numpy(array.dtype))
               for name, array in response.outputs.items()]
    raw = raw or any(datatype not in CONTENTS for _, _, datatype in outputs)
    for name, array, datatype in outputs:
        tensor = message.outputs.add(name=name, datatype=datatype.v2, shape=array.shape)
        if raw:
            message.raw_output_contents.append(encode_tensor(array, datatype))
        elif datatype is DataType.BYTES:
            tensor.contents.bytes_contents.extend(element_bytes(x) for x in array.reshape(-1))
        else:
            getattr(tensor.contents, CONTENTS[datatype][0]).extend(array.reshape(-1).tolist())
    return message


def encode_server_metadata(meta: ServerMetadata) -> pb.ServerMetadataResponse:
    return pb.ServerMetadataResponse(name=meta.name, version=meta.version,
                                     extensions=list(meta.extensions))


def encode_model_metadata(meta: ModelMetadata) -> pb.ModelMetadataResponse:
    return pb.ModelMetadataResponse(
        name=meta.name, versions=list(meta.versions), platform=meta.platform,
        inputs=[_tensor_metadata(s) for s in meta.inputs],
        outputs=[_tensor_metadata(s) for s in meta.outputs],
    )


def _tensor_metadata(spec: TensorSpec) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(
        name=spec.name, datatype=spec.datatype.v2, shape=list(spec.shape))
