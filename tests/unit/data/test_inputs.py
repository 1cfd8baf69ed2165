"""Requests generated from a signature or read from data files and scikit-learn datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kiln.data import inputs
from kiln.errors import InvalidArgument
from kiln.examples.digits import load_split
from kiln.tensors import DataType, Signature, TensorSpec

DIGITS = Signature(inputs=(TensorSpec("pixels", DataType.FP32, (-1, 64)),), outputs=())
TEXT = Signature(inputs=(TensorSpec("ids", DataType.INT64, (-1, -1)),
                         TensorSpec("words", DataType.BYTES, (-1, 2))), outputs=())


def test_generated_requests_fit_the_signature() -> None:
    data = inputs.generate(DIGITS, batch_size=8, count=4, seed=1)
    assert data.labels is None and data.source == "generated" and len(data.requests) == 4
    for request in data.requests:
        assert request["pixels"].shape == (8, 64) and request["pixels"].dtype == np.float32
    assert not np.array_equal(data.requests[0]["pixels"], data.requests[1]["pixels"])
    again = inputs.generate(DIGITS, batch_size=8, count=4, seed=1)
    assert np.array_equal(again.requests[3]["pixels"], data.requests[3]["pixels"])


def test_other_dynamic_dimensions_need_a_shape() -> None:
    with pytest.raises(InvalidArgument, match=r"--shape ids:2,N"):
        inputs.generate(TEXT, batch_size=2)
    data = inputs.generate(TEXT, batch_size=2, shapes={"ids": (2, 7)}, count=1)
    assert data.requests[0]["ids"].shape == (2, 7) and data.requests[0]["ids"].dtype == np.int64
    words = data.requests[0]["words"]
    assert words.shape == (2, 2) and isinstance(words[0, 0], bytes)
    with pytest.raises(InvalidArgument, match="does not fit"):
        inputs.generate(TEXT, shapes={"ids": (2, 7, 1)})


def test_npz_rows_are_cut_into_requests_with_labels(tmp_path: Path) -> None:
    _, x, _, y = load_split()
    path = tmp_path / "digits.npz"
    np.savez(path, images=x.astype(np.float64), labels=y)  # one array: taken as the input
    data = inputs.load(str(path), DIGITS, batch_size=50)
    assert [len(r["pixels"]) for r in data.requests] == [50] * 7 + [10]
    assert data.requests[0]["pixels"].dtype == np.float32
    assert np.array_equal(np.concatenate([r["pixels"] for r in data.requests]), x)
    assert np.array_equal(data.labels, y)  # type: ignore[arg-type]


def test_a_folder_holds_one_request_per_file(tmp_path: Path) -> None:
    for i in range(3):
        np.savez(tmp_path / f"r{i}.npz", pixels=np.full((i + 1, 64), i, np.float32),
                 label=np.full(i + 1, i))
    data = inputs.load(str(tmp_path), DIGITS)
    assert [r["pixels"].shape[0] for r in data.requests] == [1, 2, 3]
    assert data.labels.tolist() == [0, 1, 1, 2, 2, 2]  # type: ignore[union-attr]


def test_data_errors_name_the_fix(tmp_path: Path) -> None:
    np.savez(tmp_path / "two.npz", a=np.zeros((2, 64)), b=np.zeros((2, 64)))
    with pytest.raises(InvalidArgument, match=r"no array for input\(s\) pixels.*holds a, b"):
        inputs.load(str(tmp_path / "two.npz"), DIGITS)
    with pytest.raises(InvalidArgument, match="scikit-learn datasets digits"):
        inputs.load("no-such-thing", DIGITS)
    fixed = Signature(inputs=(TensorSpec("x", DataType.FP32, (4, 2)),), outputs=())
    with pytest.raises(InvalidArgument, match="exactly 4 rows"):
        inputs.split_rows({"x": np.zeros((6, 2), np.float32)}, fixed, 1)


def test_digits_dataset_is_the_examples_held_out_split() -> None:
    _, x, _, y = load_split()
    data = inputs.load("digits", DIGITS, batch_size=1)
    assert len(data.requests) == len(x) and np.array_equal(data.requests[5]["pixels"], x[5:6])
    assert np.array_equal(data.labels, y)  # type: ignore[arg-type]
    iris = inputs.load("iris", Signature(inputs=(TensorSpec("f", DataType.FP32, (-1, 4)),),
                                          outputs=()), batch_size=10)
    assert len(iris.labels) == 30 and iris.requests[0]["f"].shape == (10, 4)  # type: ignore[arg-type]
