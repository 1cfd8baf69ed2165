"""The bundled digits model, served and asked through Triton's own client."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient

from kiln.examples.digits import INPUT, LABEL, PROBABILITIES, load_split
from kiln.serve.settings import bundled_repository
from tests.server import KilnProcess


def _in_process_labels(x: np.ndarray) -> np.ndarray:
    path = bundled_repository() / "digits" / "1" / "model.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run([LABEL], {INPUT: x})[0]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_served_accuracy_equals_in_process(example_server: KilnProcess, binary: bool) -> None:
    _, x_test, _, y_test = load_split()
    expected = _in_process_labels(x_test)
    client = httpclient.InferenceServerClient(example_server.http_url)
    assert client.is_server_ready()
    assert client.is_model_ready("digits")
    served = []
    for start in range(0, len(x_test), 50):
        chunk = x_test[start:start + 50]
        inp = httpclient.InferInput(INPUT, list(chunk.shape), "FP32")
        inp.set_data_from_numpy(chunk, binary_data=binary)
        outputs = [httpclient.InferRequestedOutput(LABEL, binary_data=binary),
                   httpclient.InferRequestedOutput(PROBABILITIES, binary_data=binary)]
        result = client.infer("digits", [inp], outputs=outputs, request_id=f"r{start}")
        assert result.get_response()["id"] == f"r{start}"
        labels = result.as_numpy(LABEL)
        assert np.array_equal(labels, np.argmax(result.as_numpy(PROBABILITIES), axis=1))
        served.append(labels)
    served_labels = np.concatenate(served)
    assert np.array_equal(served_labels, expected)
    accuracy = float((served_labels == y_test).mean())
    assert accuracy == pytest.approx(float((expected == y_test).mean()))
    assert accuracy > 0.9


def test_metadata_through_tritonclient(example_server: KilnProcess) -> None:
    client = httpclient.InferenceServerClient(example_server.http_url)
    meta = client.get_model_metadata("digits")
    assert meta["inputs"] == [{"name": INPUT, "datatype": "FP32", "shape": [-1, 64]}]
    assert [o["name"] for o in meta["outputs"]] == [LABEL, PROBABILITIES]
    config = client.get_model_config("digits")
    assert config["max_batch_size"] == 64
    assert config["input"][0]["dims"] == [64]
    server = client.get_server_metadata()
    assert server["name"] == "kiln" and "binary_tensor_data" in server["extensions"]


def test_all_outputs_binary_by_default(example_server: KilnProcess) -> None:
    """tritonclient asks for every output in binary when it names none."""
    _, x_test, _, _ = load_split()
    client = httpclient.InferenceServerClient(example_server.http_url)
    inp = httpclient.InferInput(INPUT, [3, 64], "FP32")
    inp.set_data_from_numpy(x_test[:3])
    result = client.infer("digits", [inp])
    outputs = {o["name"]: o for o in result.get_response()["outputs"]}
    assert set(outputs) == {LABEL, PROBABILITIES}
    assert all("binary_data_size" in o["parameters"] for o in outputs.values())
    assert np.array_equal(result.as_numpy(LABEL), _in_process_labels(x_test[:3]))
