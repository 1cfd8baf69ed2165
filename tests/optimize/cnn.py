"""A convolutional network trained on scikit-learn's digits (8x8 images), exported to ONNX.

The shape of the CNN in the optimization findings (three 3x3 convolutions, two max-pools, a
128-unit hidden layer), with the width as a parameter: the tests train a narrow one in
seconds, the quantization benchmark the findings' 64-128-256.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def train_cnn(x: np.ndarray, y: np.ndarray, *, widths: tuple[int, int, int] = (16, 32, 64),
              epochs: int = 8, seed: int = 0) -> Any:
    """image [B, 1, 8, 8] float32 in [0, 1] -> 10 logits."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    a, b, c = widths
    model = nn.Sequential(
        nn.Conv2d(1, a, 3, padding=1), nn.ReLU(),
        nn.Conv2d(a, b, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(b, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(c * 4, 128), nn.ReLU(), nn.Linear(128, 10))
    images, labels = torch.from_numpy(x.reshape(-1, 1, 8, 8)), torch.from_numpy(y)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        for batch in torch.randperm(len(images)).split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(images[batch]), labels[batch]).backward()
            optimizer.step()
    return model.eval()


def export_cnn(model: Any, path: Path, examples: np.ndarray) -> Path:
    """Convert with kiln (parity checked) and write ``path``: image -> logits."""
    from kiln.convert import convert

    result = convert(model, example_inputs={"image": examples.reshape(-1, 1, 8, 8)},
                     output_names=["logits"])
    return result.save(path)
