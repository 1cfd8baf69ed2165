"""Accuracy against labels, and agreement of one model's outputs with a reference's, on the
same data: the figures ``kiln bench`` reports and ``kiln optimize`` budgets.

Agreement compares float outputs by error and cosine similarity, row by row; integer, boolean
and string outputs (labels, ids, text) only by how many rows match exactly.

A classifier's output is either scores (float, ``[N, classes]``: top-1 is the argmax, top-k
counts a hit when the label is among the k highest) or labels (integer, ``[N]``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from kiln.errors import InvalidArgument
from kiln.tensors import TensorDict


class _Metric(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Accuracy(_Metric):
    """Classification accuracy against labels."""

    output: str
    samples: int
    top1: float
    #: Top-k accuracy by k (only for score outputs with more than k classes).
    topk: dict[int, float] = Field(default_factory=dict)


class Agreement(_Metric):
    """How close one output is to the reference model's same output (the error metrics are
    ``None`` for integer, boolean and string outputs)."""

    output: str
    samples: int
    #: Fraction of samples whose row equals the reference's exactly (labels, argmax).
    exact_match: float
    max_abs_error: float | None = None
    mean_abs_error: float | None = None
    #: Mean and lowest cosine similarity of a sample's output row to the reference row.
    cosine_mean: float | None = None
    cosine_min: float | None = None


def classifier_output(outputs: TensorDict, preferred: str | None = None) -> str:
    """The output to score: ``preferred``, else the first float ``[N, C>1]`` output (scores),
    else the first integer ``[N]`` output (labels)."""
    if preferred is not None:
        if preferred not in outputs:
            raise InvalidArgument(f"output '{preferred}' is not among the model's outputs "
                                  f"({', '.join(outputs)})")
        return preferred
    for name, array in outputs.items():
        if array.dtype.kind == "f" and array.ndim == 2 and array.shape[1] > 1:
            return name
    for name, array in outputs.items():
        if array.dtype.kind in "iu" and array.ndim == 1:
            return name
    raise InvalidArgument("no output looks like a classifier's (float scores [N, classes] or "
                          "integer labels [N]); name one with --output")


def accuracy(outputs: TensorDict, labels: np.ndarray, *, output: str | None = None,
             top_k: Sequence[int] = (5,)) -> Accuracy:
    """Top-1 (and top-k, for score outputs with more than k classes) accuracy."""
    name = classifier_output(outputs, output)
    predicted = outputs[name]
    labels = np.asarray(labels).reshape(-1)
    if len(predicted) != len(labels):
        raise InvalidArgument(f"output '{name}' has {len(predicted)} rows but there are "
                              f"{len(labels)} labels")
    if predicted.ndim == 1:
        return Accuracy(output=name, samples=len(labels),
                        top1=float(np.mean(predicted == labels)))
    top1 = float(np.mean(np.argmax(predicted, axis=1) == labels))
    ranked = np.argsort(-predicted, axis=1, kind="stable")
    topk = {k: float(np.mean(np.any(ranked[:, :k] == labels[:, None], axis=1)))
            for k in top_k if 1 < k < predicted.shape[1]}
    return Accuracy(output=name, samples=len(labels), top1=top1, topk=topk)


def agreement(outputs: TensorDict, reference: TensorDict) -> list[Agreement]:
    """Error metrics of each output the two share, row by row."""
    shared = [name for name in reference if name in outputs]
    if not shared:
        raise InvalidArgument(f"the model's outputs ({', '.join(outputs)}) share no name with "
                              f"the reference's ({', '.join(reference)})")
    return [_compare(name, outputs[name], reference[name]) for name in shared]


def _compare(name: str, got: np.ndarray, want: np.ndarray) -> Agreement:
    if got.shape != want.shape:
        raise InvalidArgument(f"output '{name}' has shape {list(got.shape)} but the "
                              f"reference's is {list(want.shape)}")
    rows = len(got) if got.ndim else 1
    if got.dtype.kind not in "fc":  # labels, strings: only equality means anything
        same = (got == want).reshape(rows, -1).all(axis=1)
        return Agreement(output=name, samples=rows, exact_match=float(same.mean()))
    a = got.astype(np.float64).reshape(rows, -1)
    b = want.astype(np.float64).reshape(rows, -1)
    error = np.abs(a - b)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = np.sum(a * b, axis=1)
    # NOTE: two all-zero rows are identical, so their cosine is taken as 1.
    cosine = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0),
                      np.all(a == b, axis=1).astype(np.float64))
    return Agreement(output=name, samples=rows, max_abs_error=float(error.max(initial=0.0)),
                     mean_abs_error=float(error.mean()) if error.size else 0.0,
                     cosine_mean=float(cosine.mean()), cosine_min=float(cosine.min()),
                     exact_match=float(np.mean(np.all(a == b, axis=1))))
