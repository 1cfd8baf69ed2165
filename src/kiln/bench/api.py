"""``kiln.bench.run`` and ``kiln.bench.compare``: the Python face of ``kiln bench``.

    from kiln.bench import BenchOptions, run
    report = run(["model.onnx", "http://127.0.0.1:8000"],
                 BenchOptions(model="digits", concurrency=(1, 8), duration_s=3, data="digits"))
    print(report.targets[1].points[0].latency_ms.p99)
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import os
import platform
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kiln import __version__
from kiln.bench.collect import collect
from kiln.bench.load import NoProgress, Plan, Progress, closed_loop, open_loop
from kiln.bench.results import BenchReport, LoadPoint, TargetResult, TensorInfo
from kiln.bench.targets import Target, open_target
from kiln.data import inputs
from kiln.data.metrics import accuracy, agreement
from kiln.errors import InvalidArgument
from kiln.tensors import Signature, TensorDict, TensorSpec


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchOptions:
    """What to measure and how; each field is a ``kiln bench`` option of the same name."""

    #: Model name on a server (required for URL targets) and, optionally, its version.
    model: str | None = None
    model_version: str | None = None
    #: Protocol for ``http://`` targets: ``v2-json``, ``v2-binary`` or ``tfserving``.
    protocol: str = "v2-json"
    #: Closed-loop concurrency levels, one load point each.
    concurrency: tuple[int, ...] = (1, 4, 16)
    #: Open-loop request rates (requests/s), one load point each.
    rates: tuple[float, ...] = ()
    #: Open loop: "constant" intervals or "poisson" arrivals.
    distribution: str = "constant"
    duration_s: float = 5.0
    #: Measure this many requests per point instead of ``duration_s``.
    requests: int | None = None
    warmup_s: float = 1.0
    #: Rows per request: fills a leading -1 of each input's shape.
    batch_size: int = 1
    #: Full shapes for inputs with other dynamic dimensions: {"input_ids": (1, 128)}.
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    #: A .npz file, a folder of them, or a scikit-learn dataset name; labels give accuracy.
    data: str | None = None
    #: A model (or any target) whose outputs the targets are compared with.
    reference: str | None = None
    #: The classifier output to score (default: the first that looks like one).
    output: str | None = None
    top_k: tuple[int, ...] = (5,)
    #: Open loop: most requests in flight; later ones are dropped and counted.
    max_outstanding: int = 1024
    #: ONNX Runtime threads per in-process session (and for the reference).
    intra_op_threads: int = 1
    timeout_s: float = 30.0
    #: A local server process whose CPU use is reported next to the generator's.
    server_pid: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if any(c < 1 for c in self.concurrency) or any(r <= 0 for r in self.rates):
            raise InvalidArgument("concurrency levels and rates must be positive")
        if self.batch_size < 1 or (self.requests is not None and self.requests < 1):
            raise InvalidArgument("batch size and request counts must be at least 1")
        if self.distribution not in ("constant", "poisson"):
            raise InvalidArgument(f"distribution '{self.distribution}' is not constant or "
                                  "poisson")

    def plan(self) -> Plan:
        return Plan(duration_s=self.duration_s, requests=self.requests,
                    warmup_s=self.warmup_s, batch_size=self.batch_size,
                    max_outstanding=self.max_outstanding, distribution=self.distribution,
                    seed=self.seed, server_pid=self.server_pid)


def run(targets: Sequence[str | Target] | str | Target, options: BenchOptions | None = None,
        *, progress: Progress | None = None) -> BenchReport:
    """Measure each target in turn: accuracy and agreement first, then every load point."""
    items = [targets] if isinstance(targets, str | Target) else list(targets)
    if not items:
        raise InvalidArgument("name at least one target (a model file or a server URL)")
    return _run_loop(_run(items, options or BenchOptions(), progress or NoProgress()))


def compare(models: Sequence[str | Target], options: BenchOptions | None = None, *,
            progress: Progress | None = None) -> BenchReport:
    """``run`` with the first model as the reference for every model's outputs."""
    if len(models) < 2:
        raise InvalidArgument("compare needs at least two models: the original first")
    options = options or BenchOptions()
    reference = options.reference or models[0]
    if not isinstance(reference, str):
        raise InvalidArgument("compare's reference must be named by a path or URL")
    return run(models, dataclasses.replace(options, reference=reference), progress=progress)


def _run_loop(main: Coroutine[Any, Any, BenchReport]) -> BenchReport:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - no uvloop on Windows
        return asyncio.run(main)
    return uvloop.run(main)


async def _run(items: list[str | Target], options: BenchOptions,
               progress: Progress) -> BenchReport:
    dataset: inputs.Dataset | None = None
    expected: TensorDict | None = None
    results: list[TargetResult] = []
    targets = [_open(item, options) for item in items]  # a wrong spec fails before any load
    for target in targets:
        try:
            signature = await target.open()
            if dataset is None:
                dataset = _dataset(signature, options)
                expected = await _reference_outputs(options, dataset)
            result = await _measure(target, signature, dataset, expected, options, progress)
            results.append(_unique_label(result, [r.label for r in results]))
        finally:
            await target.close()
    assert dataset is not None  # at least one target ran
    return BenchReport(
        kiln_version=__version__, created=datetime.datetime.now(datetime.UTC).isoformat(),
        machine=_machine(), options=_jsonable(options), data_source=dataset.source,
        reference=options.reference, targets=results)


def _unique_label(result: TargetResult, taken: list[str]) -> TargetResult:
    label, n = result.label, 1
    while label in taken:
        n += 1
        label = f"{result.label} #{n}"
    return result.model_copy(update={"label": label})


def _open(item: str | Target, options: BenchOptions) -> Target:
    return open_target(item, model=options.model, version=options.model_version,
                       protocol=options.protocol, timeout_s=options.timeout_s,
                       intra_op_threads=options.intra_op_threads)


def _dataset(signature: Signature, options: BenchOptions) -> inputs.Dataset:
    if options.data is not None:
        return inputs.load(options.data, signature, batch_size=options.batch_size)
    return inputs.generate(signature, batch_size=options.batch_size, shapes=options.shapes,
                           seed=options.seed)


async def _reference_outputs(options: BenchOptions,
                             dataset: inputs.Dataset) -> TensorDict | None:
    if options.reference is None:
        return None
    reference = _open(options.reference, options)
    try:
        await reference.open()
        return await collect(reference, dataset.requests)
    finally:
        await reference.close()


async def _measure(target: Target, signature: Signature, dataset: inputs.Dataset,
                   expected: TensorDict | None, options: BenchOptions,
                   progress: Progress) -> TargetResult:
    result = TargetResult(label=target.label, protocol=target.protocol, address=target.address,
                          size_bytes=target.size_bytes, inputs=_info(signature.inputs),
                          outputs=_info(signature.outputs))
    if dataset.labels is not None or expected is not None:
        outputs = await collect(target, dataset.requests)
        if dataset.labels is not None:
            result = result.model_copy(update={"accuracy": accuracy(
                outputs, dataset.labels, output=options.output, top_k=options.top_k)})
        if expected is not None:
            result = result.model_copy(update={"agreement": agreement(outputs, expected)})
    points = await _points(target, dataset, options, progress)
    return result.model_copy(update={"points": points})


async def _points(target: Target, dataset: inputs.Dataset, options: BenchOptions,
                  progress: Progress) -> list[LoadPoint]:
    requests = [target.encode(r) for r in dataset.requests]
    plan, points = options.plan(), []
    for concurrency in options.concurrency:
        progress.begin(f"{target.label}  concurrency {concurrency}")
        points.append(await closed_loop(target, requests, concurrency, plan, progress))
        progress.end()
    for rate in options.rates:
        progress.begin(f"{target.label}  {rate:g} requests/s")
        points.append(await open_loop(target, requests, rate, plan, progress))
        progress.end()
    return points


def _info(specs: tuple[TensorSpec, ...]) -> list[TensorInfo]:
    return [TensorInfo(name=s.name, datatype=s.datatype.v2, shape=list(s.shape)) for s in specs]


def _machine() -> dict[str, Any]:
    import numpy
    import onnxruntime

    return {"cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "numpy": numpy.__version__,
            "onnxruntime": onnxruntime.__version__}


def _jsonable(options: BenchOptions) -> dict[str, Any]:
    values = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
    values["shapes"] = {k: list(v) for k, v in options.shapes.items()}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
