"""KServe V2 over gRPC: a real ``kiln serve`` driven by Triton's own gRPC clients."""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aio_grpcclient
import tritonclient.http.aio as aio_httpclient
from tritonclient.grpc import service_pb2 as triton
from tritonclient.grpc import service_pb2_grpc as triton_grpc
from tritonclient.utils import InferenceServerException

from kiln.serve.codecs.v2_grpc import CONTENTS
from tests.models import IDENTITY_TYPES, add_sub_model, identity_model, save
from tests.samples import sample
from tests.server import KilnProcess, kiln_serve

#: Small enough that the oversized-message test stays cheap.
MAX_MESSAGE = 1 << 20
#: ONNX string tensors hold UTF-8 text only, NUL bytes included.
TEXT = np.array([b"\x00nul\x00", b"", "é".encode(), b"tab\tend"] * 2, dtype=object)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KilnProcess]:
    repo = tmp_path_factory.mktemp("grpc_repo")
    save(identity_model(), repo, "identity")
    save(identity_model(list(CONTENTS)), repo, "typed")
    save(add_sub_model(), repo, "add_sub")
    with kiln_serve(repo, "--grpc-max-message-bytes", str(MAX_MESSAGE),
                    log_dir=Path(tmp_path_factory.mktemp("logs"))) as process:
        yield process
    # Every failure above was the client's: nothing was logged as a fault, and the server
    # shut down cleanly with both listeners open.
    assert "Traceback" not in process.log() and "ERROR" not in process.log()
    assert process.process.returncode == 0


@pytest.fixture
def client(server: KilnProcess) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}") as c:
        yield c


def identity_inputs(module=grpcclient) -> tuple[list, dict[str, np.ndarray]]:
    expected = {d.v2: TEXT.reshape(2, 4) if d.v2 == "BYTES" else sample(d)
                for d in IDENTITY_TYPES}
    inputs = []
    for name, array in expected.items():
        tensor = module.InferInput(f"in_{name}", [2, 4], name)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs, expected


def check_identity(result: grpcclient.InferResult, expected: dict[str, np.ndarray]) -> None:
    for name, array in expected.items():
        got = result.as_numpy(f"out_{name}")
        assert got.shape == (2, 4), name
        assert got.dtype == array.dtype or name == "BYTES", name
        assert np.array_equal(got, array), name


def add_sub_inputs(rows: int = 1, seed: int = 0, module=grpcclient):
    rng = np.random.default_rng(seed)
    a, b = (rng.standard_normal((rows, 16)).astype(np.float32) for _ in range(2))
    inputs = [module.InferInput("INPUT0", [rows, 16], "FP32"),
              module.InferInput("INPUT1", [rows, 16], "FP32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    return inputs, a + b, a - b


def assert_serves(client: grpcclient.InferenceServerClient) -> None:
    """After any error the server still answers a normal request."""
    inputs, total, difference = add_sub_inputs(seed=9)
    result = client.infer("add_sub", inputs)
    assert np.allclose(result.as_numpy("OUTPUT0"), total)
    assert np.allclose(result.as_numpy("OUTPUT1"), difference)


def test_health_metadata_and_config(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("identity") and client.is_model_ready("add_sub", "1")
    assert not client.is_model_ready("missing")
    server = client.get_server_metadata()
    assert server.name == "kiln" and "model_configuration" in server.extensions
    meta = client.get_model_metadata("add_sub", as_json=True)
    assert meta["versions"] == ["1"] and meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "INPUT0", "datatype": "FP32", "shape": ["-1", "16"]},
                              {"name": "INPUT1", "datatype": "FP32", "shape": ["-1", "16"]}]
    config = client.get_model_config("identity").config
    assert config.max_batch_size == 64
    assert {(i.name, tuple(i.dims)) for i in config.input} == {
        (f"in_{d.v2}", (4,)) for d in IDENTITY_TYPES}


def test_every_datatype_sync(client: grpcclient.InferenceServerClient) -> None:
    inputs, expected = identity_inputs()
    outputs = [grpcclient.InferRequestedOutput(f"out_{n}") for n in ("BYTES", "FP16", "BOOL")]
    result = client.infer("identity", inputs, outputs=outputs, request_id="sync-1")
    response = result.get_response()
    assert response.id == "sync-1" and response.model_version == "1"
    assert [o.name for o in response.outputs] == ["out_BYTES", "out_FP16", "out_BOOL"]
    check_identity(result, {n: expected[n] for n in ("BYTES", "FP16", "BOOL")})
    check_identity(client.infer("identity", inputs), expected)


def test_every_datatype_asyncio(server: KilnProcess) -> None:
    async def main() -> None:
        async with aio_grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}") as c:
            assert await c.is_model_ready("identity")
            inputs, expected = identity_inputs(aio_grpcclient)
            results = await asyncio.gather(*(
                c.infer("identity", inputs, request_id=str(i)) for i in range(4)))
            for i, result in enumerate(results):
                assert result.get_response().id == str(i)
                check_identity(result, expected)

    asyncio.run(main())


def test_stream_answers_each_request_and_survives_errors(
        client: grpcclient.InferenceServerClient) -> None:
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        inputs, expected = identity_inputs()
        wrong, _, _ = add_sub_inputs()
        for i in range(6):
            if i == 2:
                client.async_stream_infer("identity", wrong, request_id="bad")
            client.async_stream_infer("identity", inputs, request_id=f"s{i}")
        got = [answers.get(timeout=30) for _ in range(7)]
    finally:
        client.stop_stream()
    errors = [e for _, e in got if e is not None]
    assert len(errors) == 1 and "model 'identity' has no input 'INPUT0'" in errors[0].message()
    results = {r.get_response().id: r for r, e in got if e is None}
    assert sorted(results) == [f"s{i}" for i in range(6)]
    for result in results.values():
        check_identity(result, expected)


def test_stream_asyncio(server: KilnProcess) -> None:
    async def requests():
        for i in range(5):
            inputs, _, _ = add_sub_inputs(rows=i + 1, seed=i, module=aio_grpcclient)
            yield {"model_name": "add_sub", "inputs": inputs, "request_id": str(i)}
        yield {"model_name": "missing", "inputs": inputs, "request_id": "x"}

    async def main() -> list:
        async with aio_grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}") as c:
            return [answer async for answer in c.stream_infer(requests())]

    answers = asyncio.run(main())
    assert len(answers) == 6
    assert [e.message() for _, e in answers if e is not None] == ["unknown model 'missing'"]
    for result, _ in (a for a in answers if a[1] is None):
        i = int(result.get_response().id)
        _, total, difference = add_sub_inputs(rows=i + 1, seed=i)
        assert np.allclose(result.as_numpy("OUTPUT0"), total)
        assert np.allclose(result.as_numpy("OUTPUT1"), difference)


def stub_call(server: KilnProcess, method: str, request) -> object:
    """Call with Triton's generated stub and messages: plain grpcio, no tritonclient logic."""
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        return getattr(triton_grpc.GRPCInferenceServiceStub(channel), method)(request, timeout=30)


def test_typed_contents_in_typed_contents_out(server: KilnProcess) -> None:
    request = triton.ModelInferRequest(model_name="typed", id="t")
    expected = {}
    for datatype, (field, _) in CONTENTS.items():
        array = TEXT.reshape(2, 4) if datatype.v2 == "BYTES" else sample(datatype)
        tensor = request.inputs.add(name=f"in_{datatype.v2}", datatype=datatype.v2, shape=[2, 4])
        getattr(tensor.contents, field).extend(array.reshape(-1).tolist())
        expected[f"out_{datatype.v2}"] = (field, array)
    response = stub_call(server, "ModelInfer", request)
    assert response.id == "t" and not response.raw_output_contents
    assert {o.name for o in response.outputs} == set(expected)
    for output in response.outputs:
        field, array = expected[output.name]
        assert output.datatype == output.name.removeprefix("out_")
        values = np.array(list(getattr(output.contents, field)), dtype=array.dtype)
        assert np.array_equal(values, array.reshape(-1)), output.name


def _raw_add_sub(rows: int = 1) -> triton.ModelInferRequest:
    request = triton.ModelInferRequest(model_name="add_sub")
    for name in ("INPUT0", "INPUT1"):
        request.inputs.add(name=name, datatype="FP32", shape=[rows, 16])
        request.raw_input_contents.append(np.ones((rows, 16), "<f4").tobytes())
    return request


def _mixed() -> triton.ModelInferRequest:
    request = _raw_add_sub()
    request.inputs[1].contents.fp32_contents.extend([1.0] * 16)
    return request


def _one_raw_for_two_inputs() -> triton.ModelInferRequest:
    request = _raw_add_sub()
    del request.raw_input_contents[1]
    return request


def _wrong(**tensor) -> Callable[[grpcclient.InferenceServerClient], object]:
    def call(client: grpcclient.InferenceServerClient) -> object:
        inputs, _, _ = add_sub_inputs()
        bad = grpcclient.InferInput(tensor.get("name", "INPUT1"), tensor.get("shape", [1, 16]),
                                    tensor.get("datatype", "FP32"))
        bad.set_data_from_numpy(tensor.get("data", np.zeros((1, 16), np.float32)))
        return client.infer(tensor.get("model", "add_sub"), [inputs[0], bad],
                            model_version=tensor.get("version", ""))
    return call


def _not_utf8(client: grpcclient.InferenceServerClient) -> object:
    inputs, _ = identity_inputs()
    data = TEXT.reshape(2, 4).copy()
    data[1, 3] = b"\xff\xfe"
    for tensor in inputs:
        if tensor.name() == "in_BYTES":
            tensor.set_data_from_numpy(data)
    return client.infer("identity", inputs)


ERROR_CASES = {
    "unknown-model": (_wrong(model="missing"), "NOT_FOUND", "unknown model 'missing'"),
    "unknown-version": (_wrong(version="7"), "NOT_FOUND", "model 'add_sub' has no version 7"),
    "wrong-dtype": (_wrong(datatype="FP64", data=np.zeros((1, 16))), "INVALID_ARGUMENT",
                    "input 'INPUT1' of model 'add_sub' expects datatype FP32, got FP64"),
    "wrong-shape": (_wrong(shape=[1, 15], data=np.zeros((1, 15), np.float32)),
                    "INVALID_ARGUMENT",
                    "input 'INPUT1' of model 'add_sub' expects shape [-1, 16], got [1, 15]"),
    "unknown-input": (_wrong(name="INPUT9"), "INVALID_ARGUMENT",
                      "model 'add_sub' has no input 'INPUT9'; its inputs are INPUT0, INPUT1"),
    "not-utf8": (_not_utf8, "INVALID_ARGUMENT",
                 "input 'in_BYTES' element 7 is not UTF-8 text"),
    "oversized": (lambda c: c.infer("add_sub", add_sub_inputs(rows=10_000)[0]),
                  "RESOURCE_EXHAUSTED", f"vs. {MAX_MESSAGE}"),
    "repository-off": (lambda c: c.get_model_repository_index(), "PERMISSION_DENIED",
                       "--allow-repository-api true"),
    "shared-memory": (lambda c: c.get_system_shared_memory_status(), "UNIMPLEMENTED",
                      "does not support shared-memory tensors"),
}


@pytest.mark.parametrize("case", ERROR_CASES)
def test_errors_map_to_status_codes(client: grpcclient.InferenceServerClient,
                                    case: str) -> None:
    call, status, message = ERROR_CASES[case]
    with pytest.raises(InferenceServerException) as info:
        call(client)
    assert info.value.status() == f"StatusCode.{status}"
    assert message in info.value.message()
    assert_serves(client)


@pytest.mark.parametrize(
    ("request_factory", "message"),
    [(_mixed, "input 'INPUT1' has typed contents while the request also sends "
              "raw_input_contents; send every input one way, never both"),
     (_one_raw_for_two_inputs, "the request has 2 input(s) but 1 raw_input_contents entries")],
    ids=["mixed", "raw-count"],
)
def test_malformed_messages_are_invalid_argument(server: KilnProcess, request_factory,
                                                 message: str,
                                                 client: grpcclient.InferenceServerClient
                                                 ) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub_call(server, "ModelInfer", request_factory())
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert message in info.value.details()
    assert_serves(client)


def test_statistics_agree_over_grpc_and_http(server: KilnProcess,
                                            client: grpcclient.InferenceServerClient) -> None:
    inputs, _, _ = add_sub_inputs(rows=3)
    client.infer("add_sub", inputs)
    over_grpc = client.get_inference_statistics("add_sub", as_json=True)["model_stats"][0]
    over_http = httpx.get(f"{server.base}/v2/models/add_sub/stats").json()["model_stats"][0]
    assert int(over_grpc["inference_count"]) >= 3
    assert int(over_grpc["inference_count"]) == over_http["inference_count"]
    assert int(over_grpc["execution_count"]) == over_http["execution_count"]
    assert int(over_grpc["inference_stats"]["success"]["count"]) == \
        over_http["inference_stats"]["success"]["count"]


def test_http_and_grpc_share_one_process_concurrently(server: KilnProcess) -> None:
    """Requests over both transports in flight at once, each answered with its own data."""
    async def main() -> None:
        grpc_client = aio_grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
        http_client = aio_httpclient.InferenceServerClient(server.http_url, conn_limit=8)
        try:
            async def one(i: int) -> None:
                module, client = ((aio_grpcclient, grpc_client) if i % 2
                                  else (aio_httpclient, http_client))
                inputs, total, difference = add_sub_inputs(rows=i % 5 + 1, seed=i, module=module)
                result = await client.infer("add_sub", inputs)
                assert np.allclose(result.as_numpy("OUTPUT0"), total)
                assert np.allclose(result.as_numpy("OUTPUT1"), difference)

            await asyncio.gather(*(one(i) for i in range(40)))
        finally:
            await grpc_client.close()
            await http_client.close()

    asyncio.run(main())
