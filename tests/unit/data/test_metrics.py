"""Accuracy against labels and agreement with a reference, on numbers worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from kiln.data.metrics import accuracy, agreement, classifier_output
from kiln.errors import InvalidArgument

SCORES = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.4, 0.35, 0.25]],
                  np.float32)
LABELS = np.array([1, 1, 2, 2])


def test_top1_and_topk_from_scores() -> None:
    result = accuracy({"label": np.argmax(SCORES, 1), "scores": SCORES}, LABELS, top_k=(2, 5))
    assert result.output == "scores" and result.samples == 4
    assert result.top1 == 0.5  # rows 0 and 2
    assert result.topk == {2: 0.75}  # row 1's label is second; row 3's is last; k=5 > classes


def test_labels_output_and_explicit_choice() -> None:
    outputs = {"label": np.array([1, 0, 2, 2]), "scores": SCORES}
    assert accuracy(outputs, LABELS, output="label").top1 == 0.75
    assert classifier_output({"label": np.array([1, 0])}) == "label"
    with pytest.raises(InvalidArgument, match="--output"):
        classifier_output({"embedding": np.zeros((2,), np.float32)})
    with pytest.raises(InvalidArgument, match="4 rows but there are 3 labels"):
        accuracy(outputs, LABELS[:3])


def test_agreement_metrics() -> None:
    reference = {"scores": SCORES, "label": np.argmax(SCORES, 1)}
    shifted = SCORES.copy()
    shifted[0] = [0.1, 0.7, 0.5]  # error 0.3 in one element
    shifted[3] = -SCORES[3]  # opposite direction: cosine -1
    outputs = {"scores": shifted, "label": np.array([1, 0, 2, 1]), "extra": SCORES}
    scores, label = agreement(outputs, reference)
    assert scores.output == "scores" and scores.samples == 4
    assert scores.max_abs_error == pytest.approx(0.8)  # 2 * 0.4 in row 3
    assert scores.mean_abs_error == pytest.approx((0.3 + 0.8 + 0.7 + 0.5) / 12, rel=1e-6)
    assert scores.cosine_min == pytest.approx(-1.0)
    assert scores.exact_match == 0.5
    assert label.output == "label" and label.exact_match == 0.75
    assert label.max_abs_error is None and label.cosine_mean is None  # labels: equality only
    same, _ = agreement(reference, reference)
    assert same.max_abs_error == 0 and same.cosine_min == pytest.approx(1)


def test_agreement_needs_shared_outputs_of_one_shape() -> None:
    with pytest.raises(InvalidArgument, match="share no name"):
        agreement({"a": SCORES}, {"b": SCORES})
    with pytest.raises(InvalidArgument, match="shape"):
        agreement({"a": SCORES[:2]}, {"a": SCORES})
    words = np.array([b"x", b"y"], dtype=object)
    (text,) = agreement({"w": words}, {"w": np.array([b"x", b"z"], dtype=object)})
    assert text.exact_match == 0.5 and text.max_abs_error is None
