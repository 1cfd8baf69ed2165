"""Real models converted once per session into one repository, served by one ``kiln serve``.

Each framework's model is trained here on scikit-learn's digits (a few seconds each) and
converted by kiln; ``converted_server`` serves the repository they were written to.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# Before TensorFlow is first imported (here or in a `kiln convert` child process).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from kiln.examples.digits import load_split
from tests.server import KilnProcess, kiln_serve

#: Third-party noise raised while frameworks trace and save models (not kiln's warnings).
_FRAMEWORK_WARNINGS = [
    "ignore::DeprecationWarning",
    "ignore::FutureWarning",
    "ignore::UserWarning:torch",
    "ignore:.*axis name.*:UserWarning",
    "ignore::ResourceWarning",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            for spec in _FRAMEWORK_WARNINGS:
                item.add_marker(pytest.mark.filterwarnings(spec))


def run_kiln(*args: str, timeout_s: float = 240) -> subprocess.CompletedProcess[str]:
    """Run the ``kiln`` CLI in a child process and capture its output."""
    return subprocess.run([sys.executable, "-m", "kiln.cli.main", *args], capture_output=True,
                          text=True, timeout=timeout_s, check=False)


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, x_test, y_train, y_test): float32 pixels in [0, 1], shape [N, 64]."""
    return load_split()


@pytest.fixture(scope="session")
def convert_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("converted")


@pytest.fixture(scope="session")
def torch_threads() -> Any:
    import torch

    torch.set_num_threads(2)
    return torch


@pytest.fixture(scope="session")
def minilm(convert_repo: Path, torch_threads: Any) -> Path:
    """The MiniLM sentence embedding, converted once: ``convert_repo/minilm/1/model.onnx``."""
    from kiln.convert.minilm import export_minilm

    return export_minilm(convert_repo)


@pytest.fixture(scope="session")
def cnn(convert_repo: Path, digits: Any, torch_threads: Any) -> Any:
    """A small CNN trained on the digits images, converted and written as ``digits_cnn``."""
    from kiln.convert import convert
    from tests.convert.trained import train_cnn

    model = train_cnn(digits[0], digits[2])
    x = digits[1][:8].reshape(-1, 1, 8, 8)
    result = convert(model, example_inputs={"image": x}, output_names=["logits"])
    result.save_to_repository(convert_repo, name="digits_cnn", version=1)
    return model, result


@pytest.fixture(scope="session")
def keras_file(tmp_path_factory: pytest.TempPathFactory, digits: Any) -> tuple[Path, np.ndarray]:
    """A Keras model on [None, 784] float32 saved as .keras (examples beside it as
    ``examples.npy``), and its predictions on x_test."""
    from tests.convert.trained import to_784, train_keras

    model = train_keras(to_784(digits[0]), digits[2])
    path = tmp_path_factory.mktemp("keras") / "digits.keras"
    model.save(path)
    np.save(path.with_name("examples.npy"), to_784(digits[1][:8]))
    return path, model.predict(to_784(digits[1]), verbose=0)


@pytest.fixture(scope="session")
def keras_converted(keras_file: tuple[Path, np.ndarray], convert_repo: Path) -> dict[str, Any]:
    """``kiln convert digits.keras --repository ... --json`` run as a user would."""
    import json

    path = keras_file[0]
    done = run_kiln("convert", str(path), "--example", str(path.with_name("examples.npy")),
                    "--repository", str(convert_repo),
                    "--name", "keras_digits", "--output-name", "probabilities", "--json")
    assert done.returncode == 0, done.stderr + done.stdout
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.fixture(scope="session")
def pipeline(convert_repo: Path, digits: Any) -> Any:
    """StandardScaler + LogisticRegression on digits, written as ``digits_sklearn``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from kiln.convert import convert

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(digits[0], digits[2])
    result = convert(model, example_inputs=digits[1][:16])
    result.save_to_repository(convert_repo, name="digits_sklearn", version=1)
    return model, result


@pytest.fixture(scope="session")
def converted_server(convert_repo: Path, minilm: Any, cnn: Any, keras_converted: Any,
                     pipeline: Any, tmp_path_factory: pytest.TempPathFactory
                     ) -> Iterator[KilnProcess]:
    """``kiln serve`` on the repository every converted model was written to."""
    with kiln_serve(convert_repo, log_dir=tmp_path_factory.mktemp("logs")) as server:
        yield server
