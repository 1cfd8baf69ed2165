"""TensorFlow Serving REST: ``POST /v1/models/{m}[/versions/{v}]:predict`` in the columnar
(``inputs``) format; the signature comes from ``GET /v1/models/{m}/metadata``."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import orjson

from kiln.bench.http import HttpReply, build_request
from kiln.bench.targets import RemoteSpec
from kiln.bench.v2_http import HttpTarget, get_json
from kiln.errors import InvalidArgument
from kiln.tensors import DataType, Signature, TensorDict, TensorSpec

_SIGNATURE = "serving_default"


class TfServingTarget(HttpTarget):
    """A model behind a TF Serving REST endpoint (TF Serving itself, kiln, or a compatible)."""

    def __init__(self, spec: RemoteSpec) -> None:
        super().__init__(spec)
        self._path = f"/v1/models/{spec.model}" + (f"/versions/{spec.version}"
                                                    if spec.version else "")
        self._outputs: tuple[TensorSpec, ...] = ()

    async def open(self) -> Signature:
        meta = await get_json(self._client, self._path + "/metadata",
                              f"model '{self._model}' metadata")
        signature = _signature(meta, self._model)
        self._outputs = signature.outputs
        return signature

    def encode(self, inputs: TensorDict) -> bytes:
        columns = {name: _json_value(array) for name, array in inputs.items()}
        body = orjson.dumps({"signature_name": _SIGNATURE, "inputs": columns},
                            option=orjson.OPT_SERIALIZE_NUMPY)
        return build_request("POST", self._path + ":predict", self.address, body,
                             headers=(("Content-Type", "application/json"),))

    def decode(self, reply: HttpReply) -> TensorDict:
        outputs = orjson.loads(reply.body)["outputs"]
        if not isinstance(outputs, dict):  # one output: the value itself
            outputs = {self._outputs[0].name if self._outputs else "output": outputs}
        dtypes = {spec.name: spec.datatype for spec in self._outputs}
        return {name: _from_json(value, dtypes.get(name)) for name, value in outputs.items()}


def _signature(meta: dict[str, Any], model: str) -> Signature:
    try:
        defs = meta["metadata"]["signature_def"]["signature_def"]
        found = defs.get(_SIGNATURE) or next(iter(defs.values()))
    except (KeyError, TypeError, StopIteration):
        raise InvalidArgument(f"model '{model}' metadata has no signature_def") from None
    return Signature(inputs=_specs(found.get("inputs", {})),
                     outputs=_specs(found.get("outputs", {})))


def _specs(tensors: dict[str, Any]) -> tuple[TensorSpec, ...]:
    specs = []
    for name, info in tensors.items():
        dims = info.get("tensor_shape", {}).get("dim", [])
        shape = tuple(int(d.get("size", -1)) for d in dims)
        specs.append(TensorSpec(name, DataType.from_any(info["dtype"]), shape))
    return tuple(specs)


def _json_value(array: np.ndarray) -> Any:
    if array.dtype.kind not in "OSU":
        return np.ascontiguousarray(array)
    flat = [{"b64": base64.b64encode(item).decode()} if isinstance(item, bytes) else str(item)
            for item in array.reshape(-1)]
    return np.array(flat, dtype=object).reshape(array.shape).tolist()


def _from_json(value: Any, datatype: DataType | None) -> np.ndarray:
    if datatype is DataType.BYTES:
        return np.array(value, dtype=object)
    return np.asarray(value, dtype=datatype.numpy if datatype else None)
