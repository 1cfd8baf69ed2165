"""Every V2 datatype survives a round trip through kiln, as JSON and as binary."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import orjson
import pytest
import tritonclient.http as httpclient

from kiln.tensors import DataType
from tests.models import IDENTITY_TYPES, identity_model, save
from tests.server import KilnProcess, kiln_serve


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KilnProcess]:
    repo = tmp_path_factory.mktemp("repo")
    save(identity_model(), repo, "identity")
    with kiln_serve(repo, log_dir=tmp_path_factory.mktemp("logs")) as process:
        yield process


def _sample(datatype: DataType, rows: int = 3) -> np.ndarray:
    rng = np.random.default_rng(7)
    if datatype is DataType.BYTES:
        values = [b"plain", b"", b"nul\x00inside", "\u00e9t\u00e9".encode()] * rows
        return np.array(values, dtype=object).reshape(rows, 4)
    if datatype is DataType.BOOL:
        return rng.integers(0, 2, (rows, 4)).astype(bool)
    if datatype.numpy.kind in "iu":
        info = np.iinfo(datatype.numpy)
        return np.array([[info.min, info.max, 0, 1]] * rows, dtype=datatype.numpy)
    return rng.standard_normal((rows, 4)).astype(datatype.numpy)


# FP16 has no JSON form: its refusal is checked in test_v2_validation.
CASES = [(d, b) for d in IDENTITY_TYPES for b in (False, True) if b or d.json_capable]


@pytest.mark.parametrize(("datatype", "binary"), CASES,
                         ids=[f"{d.v2}-{'binary' if b else 'json'}" for d, b in CASES])
def test_round_trip(server: KilnProcess, datatype: DataType, binary: bool) -> None:
    value = _sample(datatype)
    client = httpclient.InferenceServerClient(server.http_url)
    inp = httpclient.InferInput(f"in_{datatype.v2}", list(value.shape), datatype.v2)
    inp.set_data_from_numpy(value, binary_data=binary)
    out = httpclient.InferRequestedOutput(f"out_{datatype.v2}", binary_data=binary)
    # Every other input must be present too: send zeros for them.
    others = []
    for other in IDENTITY_TYPES:
        if other is datatype:
            continue
        filler = np.zeros((3, 4), dtype=other.numpy) if other is not DataType.BYTES \
            else np.array([[b"x"] * 4] * 3, dtype=object)
        extra = httpclient.InferInput(f"in_{other.v2}", [3, 4], other.v2)
        extra.set_data_from_numpy(filler, binary_data=True)
        others.append(extra)
    result = client.infer("identity", [inp, *others], outputs=[out])
    got = result.as_numpy(f"out_{datatype.v2}")
    assert got.shape == value.shape
    if datatype is DataType.BYTES:
        as_bytes = [x if isinstance(x, bytes) else x.encode() for x in got.reshape(-1)]
        assert as_bytes == list(value.reshape(-1))
    else:
        assert got.dtype == value.dtype and np.array_equal(got, value)


def test_raw_binary_request(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Inference-Header-Content-Length: 0 sends one input's bytes alone (single-input models)."""
    repo = tmp_path_factory.mktemp("raw")
    save(identity_model([DataType.FP32]), repo, "single")
    value = np.arange(8, dtype=np.float32).reshape(2, 4)
    with kiln_serve(repo, log_dir=tmp_path_factory.mktemp("logs")) as server:
        response = httpx.post(server.base + "/v2/models/single/infer", content=value.tobytes(),
                              headers={"Inference-Header-Content-Length": "0"})
        assert response.status_code == 200, response.text
        length = int(response.headers["inference-header-content-length"])
        header = orjson.loads(response.content[:length])
        assert header["outputs"][0]["shape"] == [2, 4]
        got = np.frombuffer(response.content[length:], dtype=np.float32).reshape(2, 4)
        assert np.array_equal(got, value)
        bad = httpx.post(server.base + "/v2/models/single/infer", content=b"\0" * 7,
                         headers={"Inference-Header-Content-Length": "0"})
        assert bad.status_code == 400 and "whole rows" in bad.json()["error"]


def test_json_nested_and_flat_data_agree(server: KilnProcess) -> None:
    value = _sample(DataType.INT32)
    inputs = [{"name": f"in_{d.v2}", "shape": [3, 4], "datatype": d.v2,
               "parameters": {"binary_data_size": len(blob)}}
              for d, blob in _zero_blobs().items()]
    header = {"inputs": inputs, "outputs": [{"name": "out_INT32"}]}
    bodies = []
    for data in (value.tolist(), value.reshape(-1).tolist()):
        for item in header["inputs"]:
            if item["name"] == "in_INT32":
                item.pop("parameters", None)
                item["data"] = data
        blobs = b"".join(b for d, b in _zero_blobs().items() if d is not DataType.INT32)
        head = orjson.dumps(header)
        response = httpx.post(server.base + "/v2/models/identity/infer", content=head + blobs,
                              headers={"Inference-Header-Content-Length": str(len(head))})
        assert response.status_code == 200, response.text
        bodies.append(response.json()["outputs"][0]["data"])
    assert bodies[0] == bodies[1] == value.reshape(-1).tolist()


def _zero_blobs() -> dict[DataType, bytes]:
    from kiln.serve.codecs.binary import encode_tensor

    blobs = {}
    for d in IDENTITY_TYPES:
        zeros = np.zeros((3, 4), dtype=d.numpy) if d is not DataType.BYTES \
            else np.array([[b"x"] * 4] * 3, dtype=object)
        blobs[d] = encode_tensor(zeros, d)
    return blobs
