"""The parity check: the ONNX model must give the original model's results.

Each output is compared on every input set. An element passes when
``|onnx - original| <= atol + rtol * |original|`` (numpy's ``allclose`` rule) with the
tolerance of the output's datatype; integers, booleans and strings must be equal. The report
gives, per output, the largest absolute error and the largest relative error
``|onnx - original| / max(|original|, atol)`` over all sets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from kiln.convert.base import ConversionError, Reference, to_numpy
from kiln.convert.inputs import InputSet
from kiln.errors import KilnError
from kiln.runtime.base import Session
from kiln.tensors import DataType, format_shape


@dataclass(frozen=True, slots=True)
class Tolerance:
    """Allowed difference: ``atol + rtol * |original|`` per element."""

    atol: float
    rtol: float


#: Default tolerance per output datatype; datatypes not listed must match exactly.
DEFAULT_TOLERANCES: dict[DataType, Tolerance] = {
    DataType.FP16: Tolerance(1e-2, 1e-2),
    DataType.BF16: Tolerance(5e-2, 5e-2),
    DataType.FP32: Tolerance(1e-4, 1e-3),
    DataType.FP64: Tolerance(1e-7, 1e-6),
}
_EXACT = Tolerance(0.0, 0.0)


@dataclass(frozen=True, slots=True)
class OutputParity:
    """How far one output of the ONNX model is from the original, over all input sets."""

    name: str
    datatype: str
    max_abs_error: float
    max_rel_error: float
    atol: float
    rtol: float
    passed: bool
    #: The input set with the largest absolute error; on failure, the first failing set.
    worst: str


@dataclass(frozen=True, slots=True)
class ParityReport:
    """Per-output figures and the input sets they were measured on."""

    outputs: tuple[OutputParity, ...]
    input_sets: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)

    def failures(self) -> list[OutputParity]:
        return [o for o in self.outputs if not o.passed]

    def as_dict(self) -> dict[str, object]:
        return {"passed": self.passed, "input_sets": list(self.input_sets),
                "outputs": {o.name: {k: v for k, v in asdict(o).items() if k != "name"}
                            for o in self.outputs}}

    def describe_failures(self) -> str:
        return "; ".join(
            f"output '{o.name}' ({o.datatype}): max abs error {o.max_abs_error:.3g}, "
            f"max rel error {o.max_rel_error:.3g} exceed atol {o.atol:g} / rtol {o.rtol:g} "
            f"(first failing set: {o.worst})" for o in self.failures())


def tolerance_for(datatype: DataType, overrides: Mapping[DataType, Tolerance] | None) -> Tolerance:
    """The tolerance for an output datatype: an override, else the default, else exact."""
    if overrides and datatype in overrides:
        return overrides[datatype]
    return DEFAULT_TOLERANCES.get(datatype, _EXACT)


class ParityError(ConversionError):
    """The ONNX model's results differ from the original's beyond the tolerances."""

    def __init__(self, message: str, report: ParityReport) -> None:
        super().__init__(message)
        self.report = report


def check_parity(session: Session, reference: Reference, input_sets: Sequence[InputSet],
                 tolerances: Mapping[DataType, Tolerance] | None = None) -> ParityReport:
    """Run both models on every set and compare each output."""
    specs = session.signature.outputs
    worst: dict[str, _Worst] = {s.name: _Worst() for s in specs}
    for input_set in input_sets:
        try:
            actual = session.run(input_set.tensors)
        except KilnError as exc:
            for w in worst.values():
                w.fail(f"{input_set.label}: ONNX Runtime refused it: {exc.message}")
            continue
        expected = reference(input_set.tensors)
        if len(expected) != len(specs):
            raise _count_mismatch(len(expected), [s.name for s in specs])
        for spec, value in zip(specs, expected, strict=True):
            tol = tolerance_for(spec.datatype, tolerances)
            worst[spec.name].update(input_set.label, actual[spec.name], to_numpy(value), tol)
    outputs = []
    for spec in specs:
        tol, w = tolerance_for(spec.datatype, tolerances), worst[spec.name]
        outputs.append(OutputParity(spec.name, spec.datatype.v2, w.abs_error, w.rel_error,
                                    tol.atol, tol.rtol, w.failure is None, w.failure or w.label))
    return ParityReport(tuple(outputs), tuple(s.label for s in input_sets))


class _Worst:
    """The largest errors seen so far for one output, and the first failure."""

    def __init__(self) -> None:
        self.abs_error = 0.0
        self.rel_error = 0.0
        self.label = ""
        self.failure: str | None = None

    def update(self, label: str, actual: np.ndarray, expected: np.ndarray, tol: Tolerance) -> None:
        if actual.shape != expected.shape:
            self.fail(f"{label}: shape {format_shape(actual.shape)}, the original gives "
                       f"{format_shape(expected.shape)}")
            return
        abs_error, rel_error, ok = _errors(actual, expected, tol)
        if abs_error >= self.abs_error:
            self.abs_error, self.label = abs_error, label
        self.rel_error = max(self.rel_error, rel_error)
        if not ok:
            self.fail(label)

    def fail(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason
            self.abs_error = self.abs_error or float("inf")


def _errors(actual: np.ndarray, expected: np.ndarray, tol: Tolerance) -> tuple[float, float, bool]:
    if actual.dtype.kind in "OSU" or expected.dtype.kind in "OSU":
        equal = bool(np.array_equal(_as_text(actual), _as_text(expected)))
        return (0.0, 0.0, True) if equal else (float("inf"), float("inf"), False)
    a, e = actual.astype(np.float64), expected.astype(np.float64)
    diff = np.abs(a - e)
    if not diff.size:
        return 0.0, 0.0, True
    ok = bool(np.all(diff <= tol.atol + tol.rtol * np.abs(e)))
    rel = diff / np.maximum(np.abs(e), tol.atol or np.finfo(np.float64).tiny)
    return float(np.nanmax(diff)), float(np.nanmax(rel)), ok and not np.isnan(diff).any()


def _as_text(value: np.ndarray) -> np.ndarray:
    text: np.ndarray = np.vectorize(lambda v: v.decode() if isinstance(v, bytes) else str(v),
                                    otypes=[object])(value)
    return text


def _count_mismatch(count: int, names: list[str]) -> Exception:
    return ConversionError(
        f"the original model returned {count} output(s) but the ONNX model has "
        f"{len(names)} ({', '.join(names)}); name the outputs to compare or return them all"
    )

