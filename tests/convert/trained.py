"""Small models trained in a few seconds on scikit-learn's digits, for the conversion tests."""

from __future__ import annotations

from typing import Any

import numpy as np


def train_cnn(x: np.ndarray, y: np.ndarray, *, epochs: int = 4) -> Any:
    """A two-layer CNN on the 8x8 digit images: image [B, 1, 8, 8] -> 10 logits."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32 * 16, 10),
    )
    images = torch.from_numpy(x.reshape(-1, 1, 8, 8))
    labels = torch.from_numpy(y)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        for batch in torch.randperm(len(images)).split(64):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
            loss.backward()
            optimizer.step()
    return model.eval()


def to_784(x: np.ndarray) -> np.ndarray:
    """8x8 digits scaled to 24x24 and padded to 28x28, flattened: the MNIST-like [N, 784]."""
    images = np.kron(x.reshape(-1, 8, 8), np.ones((3, 3), np.float32))
    return np.pad(images, ((0, 0), (2, 2), (2, 2))).reshape(-1, 784).astype(np.float32)


def train_keras(x: np.ndarray, y: np.ndarray, *, epochs: int = 5) -> Any:
    """A dense Keras classifier: pixels [None, 784] float32 -> 10 probabilities."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(784,), name="pixels", dtype="float32")
    hidden = keras.layers.Dense(64, activation="relu")(inputs)
    outputs = keras.layers.Dense(10, activation="softmax")(hidden)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    return model
