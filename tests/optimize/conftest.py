"""Real models for the quantization tests, built once per session.

A CNN trained on scikit-learn's digits (seconds), the MiniLM-L6 sentence embedding exported
from its pip package, and MiniLM quantized by kiln's OpenVINO/NNCF path on real sentences
(the slow part, done once and shared).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from kiln.data import inputs
from kiln.examples.digits import load_split
from kiln.tensors import Signature
from tests.sentences import sentences

#: Third-party noise raised while frameworks trace, export and quantize (not kiln's warnings).
_FRAMEWORK_WARNINGS = [
    "ignore::DeprecationWarning",
    "ignore::FutureWarning",
    "ignore::UserWarning:torch",
    "ignore::UserWarning:nncf",
    "ignore::ResourceWarning",
]
#: Sentences 0-299 evaluate, 1000-1063 calibrate: disjoint.
EVAL_SENTENCES, CALIBRATION_OFFSET = 300, 1000


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            for spec in _FRAMEWORK_WARNINGS:
                item.add_marker(pytest.mark.filterwarnings(spec))


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, x_test, y_train, y_test) as images [N, 1, 8, 8] and int64 labels."""
    x_train, x_test, y_train, y_test = load_split()
    return x_train.reshape(-1, 1, 8, 8), x_test.reshape(-1, 1, 8, 8), y_train, y_test


@pytest.fixture(scope="session")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("optimize")


@pytest.fixture(scope="session")
def cnn(work: Path, digits: Any) -> Path:
    """The digits CNN as ONNX: image [B, 1, 8, 8] -> logits [B, 10]."""
    import torch

    from tests.optimize.cnn import export_cnn, train_cnn

    torch.set_num_threads(2)
    model = train_cnn(digits[0], digits[2])
    return export_cnn(model, work / "cnn.onnx", digits[1][:8])


@pytest.fixture(scope="session")
def digits_files(work: Path, digits: Any) -> tuple[Path, Path]:
    """``calibration.npz`` (256 training images) and ``eval.npz`` (the test split + labels)."""
    calibration, evaluation = work / "calibration.npz", work / "eval.npz"
    np.savez(calibration, image=digits[0][:256])
    np.savez(evaluation, image=digits[1], labels=digits[3])
    return calibration, evaluation


@pytest.fixture(scope="session")
def minilm(work: Path) -> Path:
    """The FP32 MiniLM sentence embedding: ``work/fp32/minilm/1/model.onnx``."""
    import torch

    from kiln.convert.minilm import export_minilm

    torch.set_num_threads(2)
    return export_minilm(work / "fp32")


def minilm_eval(signature: Signature) -> inputs.Dataset:
    """300 real sentences, 20 per request (padded per request)."""
    from kiln.convert.minilm import tokenize

    texts = sentences(EVAL_SENTENCES)
    return inputs.Dataset([tokenize(texts[i:i + 20]) for i in range(0, len(texts), 20)], None,
                          "stdlib docstrings")


@pytest.fixture(scope="session")
def minilm_int8(minilm: Path, work: Path) -> Any:
    """MiniLM through kiln's automatic path (OpenVINO/NNCF first), written to a repository."""
    from kiln.convert.minilm import tokenize
    from kiln.optimize import CalibrationData, QuantizeOptions, quantize
    from kiln.optimize.api import model_signature

    signature = model_signature(minilm)
    calibration = CalibrationData(
        [tokenize([t]) for t in sentences(64, CALIBRATION_OFFSET)], source="docstrings")
    result = quantize(minilm, calibration=calibration, evaluation=minilm_eval(signature),
                      options=QuantizeOptions(metric="cosine", max_drop=0.005, speed_rounds=0))
    result.save_to_repository(work / "quantized", name="minilm_int8")
    return result
