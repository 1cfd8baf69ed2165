"""TensorFlow Serving REST against a real ``kiln serve``, checked field by field against the
examples of TF Serving's REST API documentation (api_rest.md), adapted to models built here.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from kiln.examples.digits import INPUT, LABEL, PROBABILITIES, load_split
from kiln.serve.settings import bundled_repository
from kiln.tensors import DataType
from tests.models import (
    OPSET,
    add_sub_model,
    dense_softmax_model,
    dense_softmax_weights,
    identity_model,
    save,
)
from tests.server import KilnProcess, kiln_serve

ONE_THREAD = "optimization: {intra_op_threads: 1}\n"
OK = {"error_code": "OK", "error_message": ""}
BATCHED = "max_batch_size: 16\ndynamic_batching: {max_queue_delay_us: 30000}\n"


def _model(nodes: list[Any], inputs: list[Any], outputs: list[Any],
           inits: list[Any] | None = None) -> Any:
    graph = helper.make_graph(nodes, "test", inputs, outputs, inits or [])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def _tensor(name: str, elem: int, dims: list[Any]) -> Any:
    return helper.make_tensor_value_info(name, elem, dims)


def scale_model(offset: float) -> Any:
    """``x [B, 1] -> y = x + offset``: one float output of shape [B, 1] (fits :regress)."""
    return _model([helper.make_node("Add", ["x", "offset"], ["y"])],
                  [_tensor("x", TensorProto.FLOAT, ["batch", 1])],
                  [_tensor("y", TensorProto.FLOAT, ["batch", 1])],
                  [numpy_helper.from_array(np.array([offset], np.float32), "offset")])


def echo_model() -> Any:
    """``text [B] STRING -> text_out, text_bytes`` (the ``_bytes`` one is sent as b64)."""
    return _model([helper.make_node("Identity", ["text"], ["text_out"]),
                   helper.make_node("Identity", ["text"], ["text_bytes"])],
                  [_tensor("text", TensorProto.STRING, ["batch"])],
                  [_tensor("text_out", TensorProto.STRING, ["batch"]),
                   _tensor("text_bytes", TensorProto.STRING, ["batch"])])


def ranker_model() -> Any:
    """``features [B, 8] -> probabilities [B, 8]`` and its top 3 as ``scores``/``classes``."""
    k = numpy_helper.from_array(np.array([3], np.int64), "k")
    return _model([helper.make_node("Softmax", ["features"], ["probabilities"], axis=-1),
                   helper.make_node("TopK", ["probabilities", "k"], ["scores", "classes"])],
                  [_tensor("features", TensorProto.FLOAT, ["batch", 8])],
                  [_tensor("probabilities", TensorProto.FLOAT, ["batch", 8]),
                   _tensor("scores", TensorProto.FLOAT, ["batch", 3]),
                   _tensor("classes", TensorProto.INT64, ["batch", 3])], [k])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KilnProcess]:
    repo = tmp_path_factory.mktemp("tfs") / "repo"
    save(dense_softmax_model(), repo, "dense784", config=ONE_THREAD)
    save(add_sub_model(), repo, "add_sub", config=ONE_THREAD)
    save(add_sub_model(), repo, "batched", config=ONE_THREAD + BATCHED)
    save(echo_model(), repo, "echo", config=ONE_THREAD)
    save(ranker_model(), repo, "ranker", config=ONE_THREAD)
    save(identity_model([DataType.FP32, DataType.INT64, DataType.BOOL]), repo, "identity",
         config=ONE_THREAD)
    versions = ONE_THREAD + "version_policy: {all: true}\nlabels: {stable: 1, canary: 2}\n"
    save(scale_model(1.0), repo, "scale", version=1, config=versions)
    save(scale_model(2.0), repo, "scale", version=2)
    shutil.copytree(bundled_repository() / "digits", repo / "digits")
    (repo / "digits" / "config.yaml").write_text(ONE_THREAD)
    with kiln_serve(repo, log_dir=Path(tmp_path_factory.mktemp("logs"))) as process:
        yield process


def _post(server: KilnProcess, path: str, body: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(server.base + path, content=content,
                      headers={"content-type": "application/json"}, timeout=30)


def _ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return json.loads(response.text)  # the stdlib reads NaN/Infinity tokens


def _reference(x: np.ndarray) -> np.ndarray:
    w, b = dense_softmax_weights(784, 10)
    logits = x @ w + b
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# ---- model status -------------------------------------------------------------------------

def test_status_lists_every_version_newest_first(server: KilnProcess) -> None:
    # api_rest.md: {"model_version_status": [{"version": "1", "state": "AVAILABLE",
    #               "status": {"error_code": "OK", "error_message": ""}}]}
    body = _ok(httpx.get(server.base + "/v1/models/scale"))
    assert body == {"model_version_status": [
        {"version": "2", "state": "AVAILABLE", "status": OK},
        {"version": "1", "state": "AVAILABLE", "status": OK},
    ]}


@pytest.mark.parametrize(("selector", "version"), [
    ("/versions/1", "1"), ("/versions/2", "2"), ("/labels/stable", "1"), ("/labels/canary", "2"),
])
def test_status_of_one_version_or_label(server: KilnProcess, selector: str,
                                        version: str) -> None:
    body = _ok(httpx.get(f"{server.base}/v1/models/scale{selector}"))
    assert body == {"model_version_status": [
        {"version": version, "state": "AVAILABLE", "status": OK}]}


# ---- metadata -----------------------------------------------------------------------------

def _dims(*sizes: int) -> dict[str, Any]:
    return {"dim": [{"size": str(s), "name": ""} for s in sizes], "unknown_rank": False}


def test_metadata_signature_def(server: KilnProcess) -> None:
    body = _ok(httpx.get(server.base + "/v1/models/dense784/metadata"))
    assert body["model_spec"] == {"name": "dense784", "signature_name": "", "version": "1"}
    signatures = body["metadata"]["signature_def"]["signature_def"]
    assert list(signatures) == ["serving_default"]
    default = signatures["serving_default"]
    assert default["method_name"] == "tensorflow/serving/predict"
    assert default["inputs"] == {"pixels": {"dtype": "DT_FLOAT", "tensor_shape": _dims(-1, 784),
                                            "name": "pixels"}}
    assert default["outputs"] == {"probabilities": {
        "dtype": "DT_FLOAT", "tensor_shape": _dims(-1, 10), "name": "probabilities"}}


def test_metadata_by_label_and_dtype_names(server: KilnProcess) -> None:
    body = _ok(httpx.get(server.base + "/v1/models/scale/labels/canary/metadata"))
    assert body["model_spec"]["version"] == "2"
    body = _ok(httpx.get(server.base + "/v1/models/identity/metadata"))
    inputs = body["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
    assert {n: i["dtype"] for n, i in inputs.items()} == {
        "in_FP32": "DT_FLOAT", "in_INT64": "DT_INT64", "in_BOOL": "DT_BOOL"}
    assert _ok(httpx.get(server.base + "/v1/models/echo/metadata"))["metadata"][
        "signature_def"]["signature_def"]["serving_default"]["inputs"]["text"][
        "dtype"] == "DT_STRING"


# ---- predict: the project brief's [None, 784] float32 model ---------------------------------

def test_predict_row_format_single_input(server: KilnProcess) -> None:
    x = np.random.default_rng(1).random((3, 784), dtype=np.float32)
    body = _ok(_post(server, "/v1/models/dense784:predict",
                     {"signature_name": "serving_default", "instances": x.tolist()}))
    assert list(body) == ["predictions"]
    predictions = np.array(body["predictions"], dtype=np.float32)
    assert predictions.shape == (3, 10)
    np.testing.assert_allclose(predictions, _reference(x), rtol=1e-5, atol=1e-6)


def test_predict_columnar_format_plain_and_named(server: KilnProcess) -> None:
    x = np.random.default_rng(2).random((2, 784), dtype=np.float32)
    plain = _ok(_post(server, "/v1/models/dense784:predict", {"inputs": x.tolist()}))
    named = _ok(_post(server, "/v1/models/dense784:predict", {"inputs": {"pixels": x.tolist()}}))
    assert list(plain) == ["outputs"]
    assert plain == named
    np.testing.assert_allclose(np.array(plain["outputs"]), _reference(x), rtol=1e-5, atol=1e-6)


def test_row_instances_may_be_objects_for_a_single_input(server: KilnProcess) -> None:
    x = np.random.default_rng(3).random((2, 784), dtype=np.float32)
    body = _ok(_post(server, "/v1/models/dense784:predict",
                     {"instances": [{"pixels": row} for row in x.tolist()]}))
    np.testing.assert_allclose(np.array(body["predictions"]), _reference(x), rtol=1e-5,
                               atol=1e-6)


def test_same_answer_as_kserve_v2_on_the_same_port(server: KilnProcess) -> None:
    x = np.random.default_rng(4).random((2, 784), dtype=np.float32)
    tf = _ok(_post(server, "/V1/Models/dense784:PREDICT", {"inputs": x.tolist()}))
    v2 = _ok(_post(server, "/v2/models/dense784/infer", {"inputs": [
        {"name": "pixels", "datatype": "FP32", "shape": [2, 784], "data": x.ravel().tolist()}]}))
    assert np.array(tf["outputs"]).ravel().tolist() == v2["outputs"][0]["data"]


# ---- predict: named inputs and outputs ----------------------------------------------------

def test_row_format_named_inputs_and_outputs(server: KilnProcess) -> None:
    a = np.arange(32, dtype=np.float32).reshape(2, 16)
    b = np.ones((2, 16), dtype=np.float32)
    body = _ok(_post(server, "/v1/models/add_sub:predict", {"instances": [
        {"INPUT0": a[i].tolist(), "INPUT1": b[i].tolist()} for i in range(2)]}))
    assert body == {"predictions": [
        {"OUTPUT0": (a[i] + b[i]).tolist(), "OUTPUT1": (a[i] - b[i]).tolist()}
        for i in range(2)]}


def test_columnar_format_named_inputs_and_outputs(server: KilnProcess) -> None:
    a = np.arange(16, dtype=np.float32).reshape(1, 16)
    b = np.full((1, 16), 0.5, dtype=np.float32)
    body = _ok(_post(server, "/v1/models/add_sub:predict",
                     {"inputs": {"INPUT0": a.tolist(), "INPUT1": b.tolist()}}))
    assert body == {"outputs": {"OUTPUT0": (a + b).tolist(), "OUTPUT1": (a - b).tolist()}}


def test_row_format_with_outputs_of_different_types_on_real_data(server: KilnProcess) -> None:
    _, x_test, _, _ = load_split()
    x = x_test[:5]
    body = _ok(_post(server, "/v1/models/digits:predict", {"instances": x.tolist()}))
    path = bundled_repository() / "digits" / "1" / "model.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    labels, probabilities = session.run([LABEL, PROBABILITIES], {INPUT: x})
    assert [sorted(p) for p in body["predictions"]] == [[LABEL, PROBABILITIES]] * 5
    assert [p[LABEL] for p in body["predictions"]] == labels.tolist()
    np.testing.assert_allclose([p[PROBABILITIES] for p in body["predictions"]], probabilities,
                               rtol=1e-6)


def test_tf_serving_and_v2_requests_share_the_dynamic_batcher(server: KilnProcess) -> None:
    def stats() -> dict[str, Any]:
        return httpx.get(server.base + "/v2/models/batched/stats").json()["model_stats"][0]

    def one(i: int) -> None:
        a = np.full((1, 16), i, dtype=np.float32)
        b = np.arange(16, dtype=np.float32).reshape(1, 16)
        if i % 3 == 0:
            body = _ok(_post(server, "/v1/models/batched:predict", {"instances": [
                {"INPUT0": a[0].tolist(), "INPUT1": b[0].tolist()}]}))["predictions"][0]
        elif i % 3 == 1:
            body = _ok(_post(server, "/v1/models/batched:predict", {"inputs": {
                "INPUT0": a.tolist(), "INPUT1": b.tolist()}}))["outputs"]
            body = {k: v[0] for k, v in body.items()}
        else:
            outputs = _ok(_post(server, "/v2/models/batched/infer", {"inputs": [
                {"name": n, "datatype": "FP32", "shape": [1, 16], "data": x.ravel().tolist()}
                for n, x in (("INPUT0", a), ("INPUT1", b))]}))["outputs"]
            body = {o["name"]: o["data"] for o in outputs}
        assert body == {"OUTPUT0": (a + b)[0].tolist(), "OUTPUT1": (a - b)[0].tolist()}

    before = stats()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(36)))
    after = stats()
    executions = int(after["execution_count"]) - int(before.get("execution_count", 0))
    assert int(after["inference_count"]) - int(before.get("inference_count", 0)) == 36
    assert executions < 36  # requests from both protocols were merged into batches


def test_integer_and_boolean_tensors(server: KilnProcess) -> None:
    body = _ok(_post(server, "/v1/models/identity:predict", {"inputs": {
        "in_FP32": [[0.5, 1, 2, 3]], "in_INT64": [[-(2**62), 0, 1, 2**62]],
        "in_BOOL": [[True, False, True, False]]}}))
    assert body == {"outputs": {"out_FP32": [[0.5, 1.0, 2.0, 3.0]],
                                "out_INT64": [[-(2**62), 0, 1, 2**62]],
                                "out_BOOL": [[True, False, True, False]]}}


# ---- binary strings and non-finite floats --------------------------------------------------

def test_b64_strings_in_and_out(server: KilnProcess) -> None:
    raw = "caf\u00e9\x00bar".encode()
    encoded = base64.b64encode(raw).decode()
    body = _ok(_post(server, "/v1/models/echo:predict",
                     {"instances": [{"b64": encoded}, "plain text"]}))
    assert body == {"predictions": [
        {"text_out": raw.decode(), "text_bytes": {"b64": encoded}},
        {"text_out": "plain text", "text_bytes": {"b64": base64.b64encode(b"plain text").decode()}},
    ]}
    body = _ok(_post(server, "/v1/models/echo:predict", {"inputs": [{"b64": encoded}]}))
    assert body == {"outputs": {"text_out": [raw.decode()], "text_bytes": [{"b64": encoded}]}}


def test_nan_and_infinity_tokens_in_and_out(server: KilnProcess) -> None:
    body = b'{"inputs": {"in_FP32": [[NaN, Infinity, -Infinity, 1.5]], ' \
           b'"in_INT64": [[1, 2, 3, 4]], "in_BOOL": [[true, true, false, false]]}}'
    response = _post(server, "/v1/models/identity:predict", body)
    assert b"[[NaN,Infinity,-Infinity,1.5]]" in response.content
    out = _ok(response)["outputs"]["out_FP32"][0]
    assert np.isnan(out[0]) and out[1:] == [float("inf"), float("-inf"), 1.5]


# ---- versions and labels ------------------------------------------------------------------

@pytest.mark.parametrize(("selector", "offset"), [
    ("", 2.0), ("/versions/1", 1.0), ("/versions/2", 2.0),
    ("/labels/stable", 1.0), ("/labels/canary", 2.0),
])
def test_predict_by_version_and_label(server: KilnProcess, selector: str, offset: float) -> None:
    body = _ok(_post(server, f"/v1/models/scale{selector}:predict", {"instances": [[1.0], [3.5]]}))
    assert body == {"predictions": [[1.0 + offset], [3.5 + offset]]}


# ---- classify and regress -----------------------------------------------------------------

def test_classify_digits_on_real_data(server: KilnProcess) -> None:
    _, x_test, _, y_test = load_split()
    x = x_test[:20]
    body = _ok(_post(server, "/v1/models/digits:classify",
                     {"examples": [{INPUT: row} for row in x.tolist()]}))
    results = body["results"]
    assert len(results) == 20
    assert all([label for label, _ in r] == [str(c) for c in range(10)] for r in results)
    scores = np.array([[score for _, score in r] for r in results], dtype=np.float32)
    path = bundled_repository() / "digits" / "1" / "model.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(scores, session.run([PROBABILITIES], {INPUT: x})[0], rtol=1e-6)
    assert (scores.argmax(axis=1) == y_test[:20]).mean() > 0.8


def test_classify_with_a_classes_output(server: KilnProcess) -> None:
    features = np.array([[0, 1, 2, 3, 4, 5, 6, 7], [7, 6, 5, 4, 3, 2, 1, 0]], dtype=np.float32)
    body = _ok(_post(server, "/v1/models/ranker:classify", {
        "signature_name": "serving_default",
        "examples": [{"features": row} for row in features.tolist()]}))
    e = np.exp(features - features.max(axis=1, keepdims=True))
    probabilities = e / e.sum(axis=1, keepdims=True)
    for result, row in zip(body["results"], probabilities, strict=True):
        top = np.argsort(-row)[:3]
        assert [label for label, _ in result] == [str(i) for i in top]
        np.testing.assert_allclose([s for _, s in result], row[top], rtol=1e-6)


def test_regress_with_context(server: KilnProcess) -> None:
    body = _ok(_post(server, "/v1/models/scale/versions/1:regress",
                     {"examples": [{"x": 1.0}, {"x": [2.5]}]}))
    assert body == {"results": [2.0, 3.5]}
    body = _ok(_post(server, "/v1/models/scale/labels/canary:regress",
                     {"context": {"x": 4.0}, "examples": [{"unused": 1}]}))
    assert body == {"results": [6.0]}


@pytest.mark.parametrize(("path", "expected"), [
    ("/v1/models/digits:regress", "cannot serve :regress"),
    ("/v1/models/add_sub:classify", "cannot serve :classify"),
])
def test_classify_and_regress_refuse_models_that_do_not_fit(server: KilnProcess, path: str,
                                                            expected: str) -> None:
    response = _post(server, path, {"examples": [{"x": 1.0}]})
    assert response.status_code == 400
    assert expected in response.json()["error"]
    assert "its outputs are" in response.json()["error"]


# ---- errors -------------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/v1/models/nope"), ("GET", "/v1/models/nope/metadata"),
    ("POST", "/v1/models/nope:predict"), ("GET", "/v1/models/scale/versions/9"),
    ("GET", "/v1/models/scale/labels/beta"), ("POST", "/v1/models/scale/versions/9:predict"),
    ("POST", "/v1/models/scale/labels/beta:predict"),
])
def test_unknown_model_version_or_label_is_404(server: KilnProcess, method: str,
                                               path: str) -> None:
    response = httpx.request(method, server.base + path, content=b'{"instances": [[1.0]]}')
    assert response.status_code == 404
    assert list(response.json()) == ["error"]


@pytest.mark.parametrize(("model", "body", "expected"), [
    ("dense784", {"instances": [[0.0] * 783]},
     "input 'pixels' of model 'dense784' expects shape [-1, 784], got [1, 783]"),
    ("dense784", b'{"instances": [[0.0, ', "not valid JSON"),
    ("dense784", {"instances": [[0.0] * 784], "inputs": [[0.0] * 784]}, "not both"),
    ("dense784", {"signature_name": "serving_default"}, "'instances'"),
    ("dense784", {"signature_name": "classify", "inputs": [[0.0] * 784]},
     "no signature 'classify'"),
    ("dense784", {"instances": [[0.0] * 784, [0.0] * 10]}, "instances[1]"),
    ("dense784", {"inputs": [["a"] * 784]}, "must be numbers"),
    ("add_sub", {"instances": [[0.0] * 16]}, "has 2 inputs"),
    ("add_sub", {"inputs": {"INPUT0": [[0.0] * 16]}}, "missing input(s) INPUT1"),
    ("add_sub", {"inputs": {"INPUT0": [[0.0] * 16], "INPUT1": [[0.0] * 16], "X": [1]}},
     "no input 'X'"),
    ("echo", {"instances": [{"b64": "not base64!"}]}, "invalid base64"),
    ("identity", {"inputs": {"in_FP32": [[1.0] * 4], "in_INT64": [[1.5] * 4],
                             "in_BOOL": [[True] * 4]}}, "must be integers"),
])
def test_bad_requests_are_400_with_a_message(server: KilnProcess, model: str, body: Any,
                                             expected: str) -> None:
    response = _post(server, f"/v1/models/{model}:predict", body)
    assert response.status_code == 400, response.text
    assert expected in response.json()["error"]


def test_wrong_method_is_405_and_the_server_keeps_serving(server: KilnProcess) -> None:
    response = httpx.get(server.base + "/v1/models/dense784:predict")
    assert response.status_code == 405
    assert "error" in response.json()
    assert server.alive()
    _ok(_post(server, "/v1/models/dense784:predict", {"instances": [[0.0] * 784]}))
