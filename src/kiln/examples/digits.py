"""The bundled digits classifier: scikit-learn's ``load_digits``, a fixed split, an MLP.

Re-run ``python -m kiln.examples.digits`` (needs ``kiln-ml[sklearn]``) to retrain and
re-export ``examples/model_repository/digits/1/model.onnx``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: Input and output names of the exported model.
INPUT, LABEL, PROBABILITIES = "pixels", "label", "probabilities"
SEED = 0


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, x_test, y_train, y_test): float32 pixels scaled to [0, 1], int64 labels."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, random_state=SEED, stratify=y
    )
    return x_train, x_test, y_train, y_test


def train_and_export(path: Path) -> float:
    """Train the classifier, write it as ONNX to ``path``; returns its test accuracy."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.neural_network import MLPClassifier

    x_train, x_test, y_train, y_test = load_split()
    model = MLPClassifier(hidden_layer_sizes=(64,), max_iter=500, random_state=SEED)
    model.fit(x_train, y_train)
    onnx_model = to_onnx(
        model,
        initial_types=[(INPUT, FloatTensorType([None, 64]))],
        options={id(model): {"zipmap": False}},
        target_opset=17,
        final_types=None,
    )
    outputs = onnx_model.graph.output
    outputs[0].name, outputs[1].name = LABEL, PROBABILITIES
    for node in onnx_model.graph.node:
        node.output[:] = [_rename(o) for o in node.output]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(onnx_model.SerializeToString())
    (path.parent / "READY").touch()  # published: poll mode may load it
    return float((model.predict(x_test) == y_test).mean())


def _rename(name: str) -> str:
    return {"output_label": LABEL, "output_probability": PROBABILITIES}.get(name, name)


if __name__ == "__main__":
    target = Path(__file__).parent / "model_repository" / "digits" / "1" / "model.onnx"
    accuracy = train_and_export(target)
    print(f"wrote {target} (test accuracy {accuracy:.4f})")
