"""``kiln bench``: latency, throughput and accuracy of a model file or a running server.

    from kiln.bench import BenchOptions, run, write_report
    report = run(["model.onnx", "http://127.0.0.1:8000"],
                 BenchOptions(model="digits", concurrency=(1, 8), data="digits"))
    write_report(report, Path("out"))

Targets (``kiln.bench.targets``): a model file run in-process, KServe V2 over HTTP (JSON or
binary tensors) or gRPC, and TF Serving REST. Load (``kiln.bench.load``): closed loop at
concurrency levels, open loop at request rates. Accuracy and agreement with a reference
(``kiln.data.metrics``). Results (``kiln.bench.results``) round-trip through JSON; the
report (``kiln.bench.report``) is rich tables in the terminal and a self-contained HTML page.
"""

from kiln.bench.api import BenchOptions, compare, run
from kiln.bench.report import write_report
from kiln.bench.results import BenchReport
from kiln.bench.targets import BlockingTarget, Target, open_target

__all__ = ["BenchOptions", "BenchReport", "BlockingTarget", "Target", "compare", "open_target",
           "run", "write_report"]
