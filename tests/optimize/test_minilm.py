"""MiniLM on real sentences: the automatic path keeps the embeddings, and a quantized MiniLM
served by a real ``kiln serve`` answers like the same model run in-process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import tritonclient.http as httpclient
import yaml

from kiln.convert.minilm import tokenize
from kiln.optimize import QuantizeOptions, Recipe, quantize
from kiln.optimize.api import model_signature
from kiln.optimize.evaluate import open_session, run_all
from tests.optimize.conftest import minilm_eval
from tests.sentences import sentences
from tests.server import kiln_serve


def test_automatic_int8_keeps_mean_cosine_above_0995(minilm_int8: Any, minilm: Path) -> None:
    assert minilm_int8.signature == model_signature(minilm)  # same inputs and outputs
    report = minilm_int8.report
    assert report.recipe["method"] == "openvino" and report.backend == "openvino"
    assert report.met is True and len(report.trials) == 1  # no hand-picked exclusions
    assert report.eval_samples == 300 and report.metric == "cosine"
    assert report.quantized["cosine_mean"] >= 0.995
    assert report.quantized["cosine_min"] >= 0.98
    assert report.size_after < report.size_before / 3.5
    model = onnx.load_from_string(minilm_int8.model_bytes)
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_dynamic_int8_per_channel_keeps_mean_cosine_above_099(minilm: Path) -> None:
    result = quantize(minilm, recipe=Recipe(method="dynamic"),
                      evaluation=minilm_eval(model_signature(minilm)),
                      options=QuantizeOptions(speed_rounds=0))
    assert result.report.quantized["cosine_mean"] >= 0.99
    assert result.report.quantized["cosine_min"] >= 0.97
    assert result.report.size_after < 25e6


def test_openvino_backend_runs_fp32_minilm_like_onnx_runtime(minilm: Path) -> None:
    inputs = tokenize(sentences(8, 1500))
    reference = run_all(open_session(minilm, "onnxruntime"), [inputs])["embedding"]
    session = open_session(minilm, "openvino")
    assert [s.name for s in session.signature.inputs] == ["input_ids", "attention_mask",
                                                          "token_type_ids"]
    assert session.signature.outputs[0].shape == (-1, 384)
    np.testing.assert_allclose(session.run(inputs)["embedding"], reference, atol=2e-5)


def test_served_quantized_minilm_matches_in_process(minilm_int8: Any, work: Path) -> None:
    repo = work / "quantized"
    config = yaml.safe_load((repo / "minilm_int8" / "config.yaml").read_text())
    assert config["backend"] == "openvino"
    manifest = json.loads((repo / "minilm_int8" / "1" / "manifest.json").read_text())
    assert manifest["optimization"]["recipe"]["method"] == "openvino"
    assert manifest["optimization"]["quality"]["cosine_mean"] >= 0.995
    assert (repo / "minilm_int8" / "1" / "report.md").is_file()
    inputs = tokenize(["a served, quantized sentence", "x", *sentences(6, 1600)])
    model = repo / "minilm_int8" / "1" / "model.onnx"
    expected = open_session(model, "openvino").run(inputs)["embedding"]
    with kiln_serve(repo, log_dir=work) as server:
        client = httpclient.InferenceServerClient(server.http_url)
        tensors = []
        for name, value in inputs.items():
            tensor = httpclient.InferInput(name, list(value.shape), "INT64")
            tensor.set_data_from_numpy(value, binary_data=True)
            tensors.append(tensor)
        result = client.infer("minilm_int8", tensors)
        metadata = client.get_model_metadata("minilm_int8")
    assert metadata["platform"] == "openvino"
    np.testing.assert_allclose(result.as_numpy("embedding"), expected, atol=1e-5)
