"""Each converted model, served by a real ``kiln serve``, answers like the original framework."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import tritonclient.http as httpclient

from kiln.repository.config import load_yaml_config
from tests.convert.trained import to_784
from tests.server import KilnProcess


def _infer(server: KilnProcess, model: str, inputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """All outputs for ``inputs``, asked in requests of at most 64 rows (max_batch_size)."""
    client = httpclient.InferenceServerClient(server.http_url)
    rows = len(next(iter(inputs.values())))
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, rows, 64):
        tensors = []
        for name, value in inputs.items():
            chunk = value[start:start + 64]
            tensor = httpclient.InferInput(name, list(chunk.shape),
                                           "INT64" if chunk.dtype == np.int64 else "FP32")
            tensor.set_data_from_numpy(chunk, binary_data=True)
            tensors.append(tensor)
        result = client.infer(model, tensors)
        for output in result.get_response()["outputs"]:
            parts.setdefault(output["name"], []).append(result.as_numpy(output["name"]))
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def test_minilm_served_embeddings_match_pytorch(converted_server: KilnProcess) -> None:
    import torch

    from kiln.convert.minilm import load_embedder, tokenize

    texts = ["a served sentence", "another, rather longer, sentence about kilns and clay", "x"]
    inputs = tokenize(texts)
    with torch.inference_mode():
        expected = load_embedder()(*(torch.from_numpy(inputs[n]) for n in inputs)).numpy()
    embedding = _infer(converted_server, "minilm", inputs)["embedding"]
    assert embedding.shape == (3, 384)
    np.testing.assert_allclose(embedding, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, atol=1e-5)
    meta = httpclient.InferenceServerClient(converted_server.http_url).get_model_metadata("minilm")
    assert {i["name"]: i["shape"] for i in meta["inputs"]} == {
        "input_ids": [-1, -1], "attention_mask": [-1, -1], "token_type_ids": [-1, -1]}
    assert meta["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}]


def test_cnn_served_logits_match_pytorch(converted_server: KilnProcess, cnn: Any,
                                         digits: Any) -> None:
    import torch

    model, _ = cnn
    x_test, y_test = digits[1].reshape(-1, 1, 8, 8), digits[3]
    with torch.inference_mode():
        expected = model(torch.from_numpy(x_test)).numpy()
    logits = _infer(converted_server, "digits_cnn", {"image": x_test})["logits"]
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=1e-4)
    assert np.array_equal(logits.argmax(1), expected.argmax(1))
    assert (logits.argmax(1) == y_test).mean() > 0.9


def test_keras_served_probabilities_match_keras(converted_server: KilnProcess,
                                                keras_file: Any, keras_converted: Any,
                                                digits: Any) -> None:
    _, expected = keras_file
    x = to_784(digits[1])
    probabilities = _infer(converted_server, "keras_digits", {"pixels": x})["probabilities"]
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    assert (probabilities.argmax(1) == digits[3]).mean() > 0.9
    assert keras_converted["signature"]["inputs"] == [
        {"name": "pixels", "datatype": "FP32", "shape": [-1, 784]}]


def test_sklearn_served_labels_and_probabilities(converted_server: KilnProcess, pipeline: Any,
                                                 digits: Any) -> None:
    model, _ = pipeline
    x = digits[1]
    result = _infer(converted_server, "digits_sklearn", {"input": x})
    assert np.array_equal(result["label"], model.predict(x))
    np.testing.assert_allclose(result["probabilities"], model.predict_proba(x),
                               atol=1e-5)


def test_written_configs_validate_and_fit_the_models(converted_server: KilnProcess,
                                                     convert_repo: Path) -> None:
    client = httpclient.InferenceServerClient(converted_server.http_url)
    for name in ("minilm", "digits_cnn", "keras_digits", "digits_sklearn"):
        config = load_yaml_config(convert_repo / name / "config.yaml")
        assert config.name == name and config.max_batch_size == 64
        assert config.dynamic_batching is not None
        assert client.get_model_config(name)["max_batch_size"] == 64
    minilm = load_yaml_config(convert_repo / "minilm" / "config.yaml")
    assert [(t.name, t.datatype.v2, t.dims) for t in minilm.inputs or []] == [
        ("input_ids", "INT64", [-1]), ("attention_mask", "INT64", [-1]),
        ("token_type_ids", "INT64", [-1])]
    assert [(t.name, t.dims) for t in minilm.outputs or []] == [("embedding", [384])]


def test_minilm_is_the_sentence_transformers_embedding(minilm: Path) -> None:
    """The converted model gives what sentence-transformers' own encode() gives."""
    import onnxruntime as ort
    from sentence_transformers import SentenceTransformer

    from kiln.convert.minilm import SAMPLE_TEXTS, model_path, tokenize

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(minilm), options, providers=["CPUExecutionProvider"])
    texts = [*SAMPLE_TEXTS, "sentence embeddings for semantic search"]
    (embedding,) = session.run(None, tokenize(texts))
    expected = SentenceTransformer(str(model_path()), device="cpu").encode(texts)
    np.testing.assert_allclose(embedding, expected, atol=1e-5)
    manifest = json.loads((minilm.parent / "manifest.json").read_text())
    figures = manifest["parity"]["outputs"]["embedding"]
    assert figures["passed"] and figures["max_abs_error"] < 1e-5
    assert manifest["parity"]["input_sets"] == [
        "examples", "generated batch 1", "generated batch 2", "generated batch 16"]


def test_manifest_records_sha256_and_provenance(convert_repo: Path, keras_converted: Any,
                                                pipeline: Any, cnn: Any) -> None:
    import hashlib

    for name, framework, converter in (("keras_digits", "keras", "tf2onnx"),
                                       ("digits_sklearn", "sklearn", "skl2onnx"),
                                       ("digits_cnn", "torch", "torch.onnx.export (dynamo)")):
        version = convert_repo / name / "1"
        manifest = json.loads((version / "manifest.json").read_text())
        digest = hashlib.sha256((version / "model.onnx").read_bytes()).hexdigest()
        assert manifest["files"] == {"model.onnx": {
            "sha256": digest, "bytes": (version / "model.onnx").stat().st_size}}
        assert manifest["model"] == {"name": name, "version": 1}
        assert manifest["source"]["framework"] == framework
        assert manifest["source"]["converter"].startswith(converter)
        assert manifest["onnx"]["opset"] == 18
        assert manifest["parity"]["passed"] is True
        assert manifest["parity"]["input_sets"] == [
            "examples", "generated batch 1", "generated batch 2", "generated batch 16"]
    assert keras_converted["path"].endswith("keras_digits/1/model.onnx")
    assert keras_converted["parity"]["outputs"]["probabilities"]["max_abs_error"] < 1e-5


def test_keras_model_answers_tf_serving_predict_in_both_formats(
        converted_server: KilnProcess, keras_file: Any, digits: Any) -> None:
    """The brief's example end to end: a Keras [None, 784] float32 model, converted by
    ``kiln convert`` and called through TF Serving's REST ``:predict``, row and columnar."""
    _, expected = keras_file
    x = to_784(digits[1])[:5]
    url = f"{converted_server.base}/v1/models/keras_digits:predict"
    rows = httpx.post(url, json={"signature_name": "serving_default",
                                 "instances": x.tolist()})
    assert rows.status_code == 200, rows.text
    np.testing.assert_allclose(rows.json()["predictions"], expected[:5], atol=1e-5)
    columns = httpx.post(url, json={"inputs": {"pixels": x.tolist()}})
    assert columns.status_code == 200, columns.text
    np.testing.assert_allclose(columns.json()["outputs"], expected[:5], atol=1e-5)
    status = httpx.get(f"{converted_server.base}/v1/models/keras_digits").json()
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
    metadata = httpx.get(f"{converted_server.base}/v1/models/keras_digits/metadata").json()
    signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    pixels = signature["inputs"]["pixels"]
    assert pixels["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in pixels["tensor_shape"]["dim"]] == ["-1", "784"]
