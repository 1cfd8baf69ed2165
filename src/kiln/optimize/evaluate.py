"""Measuring a quantized model's quality against the FP32 model on held-back data.

Metrics (what ``--metric`` and ``--max-drop`` mean):

* ``accuracy``: top-1 against the data's labels; the drop is FP32 accuracy minus the
  candidate's, in percentage points (``--max-drop 0.5`` = half a point).
* ``cosine``: cosine similarity of each output row to the FP32 model's row; the drop is
  ``1 - mean cosine`` (``--max-drop 0.005`` keeps mean cosine at 0.995 or more).
* ``mae``: mean absolute difference from the FP32 outputs; the drop is that error.

The numbers come from ``kiln.data.metrics``, the same code ``kiln bench compare`` uses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kiln.data.metrics import accuracy, agreement, classifier_output
from kiln.errors import InvalidArgument
from kiln.runtime import BackendTable, ModelArtifact, Session, SessionOptions
from kiln.tensors import TensorDict

METRICS = ("accuracy", "cosine", "mae")


@dataclass(frozen=True, slots=True)
class Quality:
    """One model's quality on the evaluation data."""

    metric: str
    #: The metric's value: accuracy (0..1), mean cosine, or mean absolute error.
    value: float
    #: How much worse than FP32, in the metric's drop unit (see the module docstring).
    drop: float
    cosine_mean: float | None = None
    cosine_min: float | None = None
    mean_abs_error: float | None = None
    accuracy: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def open_session(path: Path, backend: str, *, threads: int = 1) -> Session:
    """A session on ``path`` with ``backend``, with ``threads`` intra-op threads, no spinning."""
    options = SessionOptions(intra_op_threads=threads, inter_op_threads=1, allow_spinning=False)
    return BackendTable().get(backend).load(ModelArtifact(path=path), options)


def run_all(session: Session, requests: list[TensorDict]) -> TensorDict:
    """Every request through ``session``; each output's rows concatenated in order."""
    replies = [session.run(r) for r in requests]
    return {name: np.concatenate([r[name] for r in replies]) for name in replies[0]}


class Evaluator:
    """Scores models against the FP32 reference on the same requests."""

    def __init__(self, reference: Path, requests: list[TensorDict], *, metric: str,
                 labels: np.ndarray | None = None, output: str | None = None,
                 threads: int = 1) -> None:
        if metric not in METRICS:
            raise InvalidArgument(f"metric '{metric}' is not one of {', '.join(METRICS)}")
        if metric == "accuracy" and labels is None:
            raise InvalidArgument("the accuracy metric needs labels in the evaluation data "
                                  "(an array named 'labels' in the .npz file)")
        if not requests:
            raise InvalidArgument("the evaluation data holds no samples")
        self.metric, self.requests, self.labels, self.threads = metric, requests, labels, threads
        session = open_session(reference, "onnxruntime", threads=threads)
        try:
            self.expected = run_all(session, requests)
        finally:
            session.close()
        self.output = self._output(output)
        self.baseline = self._quality(self.expected, None)

    def _output(self, preferred: str | None) -> str:
        if self.metric == "accuracy":
            return classifier_output(self.expected, preferred)
        if preferred is not None:
            return classifier_output(self.expected, preferred)
        floats = [n for n, v in self.expected.items() if v.dtype.kind == "f"]
        if not floats:
            raise InvalidArgument(f"the {self.metric} metric compares float outputs; the model "
                                  "has none")
        return floats[0]

    def measure(self, path: Path, backend: str) -> Quality:
        """The quality of the model at ``path`` when run by ``backend``."""
        session = open_session(path, backend, threads=self.threads)
        try:
            outputs = run_all(session, self.requests)
        finally:
            session.close()
        return self._quality(outputs, self.baseline)

    def _quality(self, outputs: TensorDict, baseline: Quality | None) -> Quality:
        agree = next(a for a in agreement({self.output: outputs[self.output]},
                                          {self.output: self.expected[self.output]}))
        top1 = (accuracy(outputs, self.labels, output=self.output).top1
                if self.labels is not None and self.metric == "accuracy" else None)
        if self.metric == "accuracy":
            value = float(top1 or 0.0)
            drop = 0.0 if baseline is None else (baseline.value - value) * 100
        elif self.metric == "cosine":
            value = float(agree.cosine_mean if agree.cosine_mean is not None else 0.0)
            drop = 1.0 - value
        else:
            value = float(agree.mean_abs_error or 0.0)
            drop = value
        return Quality(self.metric, value, drop, agree.cosine_mean, agree.cosine_min,
                       agree.mean_abs_error, top1)

