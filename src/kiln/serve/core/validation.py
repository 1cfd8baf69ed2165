"""Checks a decoded request against the model's signature before it reaches the model.

Shared by every protocol: the V2 REST, gRPC and TF Serving adapters all end here, so a
request is judged the same way whatever wire it came on.
"""

from __future__ import annotations

from kiln.errors import InvalidArgument
from kiln.serve.messages import InferenceRequest
from kiln.tensors import DataType, Signature, format_shape


def validate_request(request: InferenceRequest, signature: Signature) -> int:
    """Raise ``InvalidArgument`` naming model, tensor and problem; return the batch size.

    The batch size is the first dimension shared by every input (1 when the model has no
    batch dimension).
    """
    model = request.model_name
    batch: int | None = None
    for name, array in request.inputs.items():
        spec = signature.input(name)
        if spec is None:
            raise InvalidArgument(
                f"model '{model}' has no input '{name}'; its inputs are "
                f"{', '.join(s.name for s in signature.inputs)}"
            )
        got = DataType.from_numpy(array.dtype)
        if got is not spec.datatype:
            raise InvalidArgument(
                f"input '{name}' of model '{model}' expects datatype {spec.datatype.v2}, "
                f"got {got.v2}"
            )
        if not spec.accepts_shape(array.shape):
            raise InvalidArgument(
                f"input '{name}' of model '{model}' expects shape {spec.describe_shape()}, "
                f"got {format_shape(array.shape)}"
            )
        if signature.max_batch_size > 0:
            rows = array.shape[0]
            if rows > signature.max_batch_size:
                raise InvalidArgument(
                    f"input '{name}' of model '{model}' has batch size {rows}, more than the "
                    f"model's max_batch_size {signature.max_batch_size}; split the request"
                )
            if batch is not None and rows != batch:
                raise InvalidArgument(
                    f"inputs of model '{model}' disagree on the batch size: '{name}' has "
                    f"{rows}, others have {batch}"
                )
            batch = rows
    missing = [s.name for s in signature.inputs if s.name not in request.inputs]
    if missing:
        raise InvalidArgument(
            f"model '{model}' is missing input(s) {', '.join(missing)}"
        )
    if request.outputs is not None:
        seen = set()
        for output in request.outputs:
            if signature.output(output.name) is None:
                raise InvalidArgument(
                    f"model '{model}' has no output '{output.name}'; its outputs are "
                    f"{', '.join(s.name for s in signature.outputs)}"
                )
            if output.name in seen:
                raise InvalidArgument(f"output '{output.name}' is requested twice")
            seen.add(output.name)
    return batch if batch is not None else 1


def schedule_parameters(parameters: dict[str, object]) -> tuple[int, int | None]:
    """The ``priority`` and ``timeout`` (microseconds) request parameters, checked."""
    values = []
    for key in ("priority", "timeout"):
        value = parameters.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InvalidArgument(f"parameter '{key}' must be a non-negative integer")
        values.append(value)
    return values[0], values[1] or None
