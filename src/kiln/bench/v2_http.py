"""KServe V2 over HTTP, with tensors as JSON (``v2-json``) or in Triton's binary extension
(``v2-binary``). Works with kiln, Triton, MLServer, KServe and any Open Inference Protocol
server; the signature comes from the model metadata endpoint."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from kiln.bench.http import HttpClient, HttpReply, build_request
from kiln.bench.targets import RemoteError, RemoteSpec
from kiln.errors import ErrorKind, Unavailable
from kiln.serve.codecs.binary import decode_tensor, encode_tensor
from kiln.tensors import DataType, Signature, TensorDict, TensorSpec

_HEADER_LENGTH = b"inference-header-content-length"

#: HTTP status -> the error kind the report counts (other 4xx: invalid argument, 5xx: internal).
_STATUS_KINDS: dict[int, ErrorKind] = {
    400: ErrorKind.INVALID_ARGUMENT, 401: ErrorKind.UNAUTHENTICATED,
    403: ErrorKind.PERMISSION_DENIED, 404: ErrorKind.NOT_FOUND,
    413: ErrorKind.RESOURCE_EXHAUSTED, 429: ErrorKind.RESOURCE_EXHAUSTED,
    501: ErrorKind.UNIMPLEMENTED, 503: ErrorKind.UNAVAILABLE,
}


def http_error(reply: HttpReply, what: str) -> RemoteError:
    """The error for a failed reply, carrying the server's ``{"error": ...}`` text."""
    try:
        message = str(orjson.loads(reply.body).get("error", reply.body[:200]))
    except (orjson.JSONDecodeError, AttributeError):
        message = reply.body[:200].decode("utf-8", "replace")
    default = ErrorKind.INVALID_ARGUMENT if reply.status < 500 else ErrorKind.INTERNAL
    return RemoteError(_STATUS_KINDS.get(reply.status, default),
                       f"{what}: HTTP {reply.status}: {message}")


async def get_json(client: HttpClient, path: str, what: str) -> Any:
    """GET ``path`` and parse its JSON body; failures become ``KilnError``s naming ``what``."""
    try:
        reply = await client.send(build_request("GET", path, f"{client.host}:{client.port}"))
    except TimeoutError:
        raise Unavailable(f"{what}: no answer within {client.timeout_s} s") from None
    if reply.status != 200:
        raise http_error(reply, what)
    return orjson.loads(reply.body)


class HttpTarget:
    """What HTTP targets share: the connection pool, sending, failing on a non-200 reply."""

    size_bytes = None

    def __init__(self, spec: RemoteSpec) -> None:
        self.protocol = spec.protocol
        self.address = f"{spec.host}:{spec.port}"
        self.label = f"{spec.protocol} {self.address}"
        self._model = spec.model
        self._client = HttpClient(spec.host, spec.port, timeout_s=spec.timeout_s)

    async def call(self, request: bytes) -> HttpReply:
        reply = await self._client.send(request)
        if reply.status != 200:
            raise http_error(reply, f"model '{self._model}'")
        return reply

    async def close(self) -> None:
        await self._client.close()


class V2HttpTarget(HttpTarget):
    """A model behind a KServe V2 REST endpoint."""

    def __init__(self, spec: RemoteSpec) -> None:
        super().__init__(spec)
        self.binary = spec.protocol == "v2-binary"
        base = f"/v2/models/{spec.model}"
        self._path = base + (f"/versions/{spec.version}" if spec.version else "")

    async def open(self) -> Signature:
        meta = await get_json(self._client, self._path, f"model '{self._model}' metadata")
        return Signature(inputs=tuple(_spec(t) for t in meta.get("inputs", [])),
                         outputs=tuple(_spec(t) for t in meta.get("outputs", [])))

    def encode(self, inputs: TensorDict) -> bytes:
        tensors, blobs = [], []
        for name, array in inputs.items():
            datatype = DataType.from_numpy(array.dtype)
            entry: dict[str, Any] = {"name": name, "shape": array.shape,
                                     "datatype": datatype.v2}
            if self.binary or not datatype.json_capable:
                blob = encode_tensor(array, datatype)
                entry["parameters"] = {"binary_data_size": len(blob)}
                blobs.append(blob)
            else:
                entry["data"] = _json_data(array, datatype)
            tensors.append(entry)
        doc: dict[str, Any] = {"inputs": tensors}
        if self.binary:
            doc["parameters"] = {"binary_data_output": True}
        header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
        headers = [("Content-Type", "application/json")]
        if blobs:
            headers = [("Content-Type", "application/octet-stream"),
                       ("Inference-Header-Content-Length", str(len(header)))]
        return build_request("POST", self._path + "/infer", self.address,
                             b"".join([header, *blobs]), headers=tuple(headers))

    def decode(self, reply: HttpReply) -> TensorDict:
        length = reply.headers.get(_HEADER_LENGTH)
        split = int(length) if length is not None else len(reply.body)
        doc = orjson.loads(reply.body[:split])
        binary, offset, outputs = memoryview(reply.body)[split:], 0, {}
        for item in doc["outputs"]:
            datatype, shape = DataType.from_v2(item["datatype"]), tuple(item["shape"])
            size = item.get("parameters", {}).get("binary_data_size")
            if size is None:
                outputs[item["name"]] = _from_json(item["data"], datatype, shape)
                continue
            count = int(np.prod(shape))
            outputs[item["name"]] = decode_tensor(binary[offset:offset + size], datatype,
                                                  shape, count, what=item["name"])
            offset += size
        return outputs


def _spec(meta: dict[str, Any]) -> TensorSpec:
    return TensorSpec(meta["name"], DataType.from_v2(meta["datatype"]),
                      tuple(int(d) for d in meta["shape"]))


def _json_data(array: np.ndarray, datatype: DataType) -> Any:
    flat = np.ascontiguousarray(array).reshape(-1)
    if datatype is DataType.BYTES:
        return [item.decode("utf-8") if isinstance(item, bytes) else str(item) for item in flat]
    return flat


def _from_json(data: list[Any], datatype: DataType, shape: tuple[int, ...]) -> np.ndarray:
    if datatype is DataType.BYTES:
        flat = np.empty(len(data), dtype=object)
        flat[:] = [item.encode("utf-8") for item in data]
        return flat.reshape(shape)
    return np.asarray(data, dtype=datatype.numpy).reshape(shape)
