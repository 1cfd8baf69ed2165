"""``kiln bench [compare] TARGET...``: latency, throughput and accuracy of model files and
servers, as tables in the terminal and, with ``--report DIR``, a JSON file and an HTML page.

Exit status: 0 when every measured request succeeded, 1 when some failed (the report is still
written), 2 when the command line or a target is wrong.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from kiln.errors import KilnError


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 1,4,16, got '{text}'") from None


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 100,500, got '{text}'") from None


def _shape(text: str) -> tuple[str, tuple[int, ...]]:
    name, _, dims = text.rpartition(":")
    if not name:
        raise argparse.ArgumentTypeError(f"expected NAME:D1,D2,... such as input_ids:1,128, "
                                         f"got '{text}'")
    return name, _ints(dims)


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bench", help="measure latency, throughput and accuracy of a model or a server",
        description="Measure model files (run in-process) and servers (V2 HTTP JSON or binary, "
        "V2 gRPC, TF Serving REST). 'kiln bench compare ORIGINAL OTHER...' also compares each "
        "model's outputs with the first one's.",
        epilog="Targets: model.onnx | http://HOST:PORT | grpc://HOST:PORT | "
        "PROTOCOL+http://HOST:PORT (PROTOCOL: v2-json, v2-binary, tfserving).")
    parser.add_argument("targets", nargs="+", metavar="TARGET",
                        help="model files or server URLs; 'compare' first to compare outputs")
    add = parser.add_argument
    add("-m", "--model", help="model name on the server (required for URLs)")
    add("--model-version", help="model version on the server (default: the server's choice)")
    add("--protocol", default="v2-json", choices=["v2-json", "v2-binary", "tfserving"],
        help="protocol for http:// targets (default v2-json)")
    add("-c", "--concurrency", type=_ints, default=(1, 4, 16), metavar="N,N,...",
        help="closed-loop concurrency levels (default 1,4,16)")
    add("--rate", type=_floats, default=(), metavar="R,R,...",
        help="open-loop request rates per second, one load point each")
    add("--distribution", choices=["constant", "poisson"], default="constant",
        help="open-loop arrivals (default constant)")
    add("-d", "--duration", type=float, default=5.0, metavar="SECONDS",
        help="measured seconds per load point (default 5)")
    add("-n", "--requests", type=int, metavar="N", help="measure N requests per point instead")
    add("--warmup", type=float, default=1.0, metavar="SECONDS",
        help="warm-up before each point (default 1)")
    add("-b", "--batch-size", type=int, default=1, help="rows per request (default 1)")
    add("--shape", type=_shape, action="append", default=[], metavar="NAME:D1,D2",
        help="full shape of an input with dynamic dimensions; repeatable")
    add("--data", metavar="PATH|DATASET",
        help=".npz file, folder of .npz files, or scikit-learn dataset (digits, iris, ...)")
    add("--reference", metavar="MODEL", help="compare every target's outputs with this model")
    add("--output", help="classifier output to score (default: the first that looks like one)")
    add("--top-k", type=_ints, default=(5,), metavar="K,K", help="top-k accuracies (default 5)")
    add("--max-outstanding", type=int, default=1024, help="open loop: most requests in flight")
    add("--intra-op-threads", type=int, default=1, help="ONNX Runtime threads, in-process")
    add("--timeout", type=float, default=30.0, metavar="SECONDS", help="per request")
    add("--server-pid", type=int, help="also report this local server process's CPU use")
    add("--seed", type=int, default=0, help="seed of generated inputs")
    add("--report", type=Path, metavar="DIR", help="write report.json and report.html here")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from kiln.bench import compare, run, write_report
    from kiln.bench.report import RichProgress, print_report

    targets = list(args.targets)
    comparing = targets[0] == "compare"
    if comparing:
        targets = targets[1:]
    # NOTE: rich draws 80 columns when not writing to a terminal; the tables need more.
    console = Console(width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 120)
    errors = Console(stderr=True)
    progress = RichProgress(errors)
    try:
        options = _options(args)
        report = (compare if comparing else run)(targets, options, progress=progress)
    except KilnError as exc:
        print(f"kiln bench: {exc.message}", file=sys.stderr)
        return 2
    finally:
        progress.close()
    print_report(report, console)
    if args.report is not None:
        json_path, html_path = write_report(report, args.report)
        console.print(f"wrote {json_path} and {html_path}", highlight=False)
    failed = any(p.ok != p.sent for t in report.targets for p in t.points)
    return 1 if failed else 0


def _options(args: argparse.Namespace) -> Any:
    from kiln.bench import BenchOptions

    return BenchOptions(
        model=args.model, model_version=args.model_version, protocol=args.protocol,
        concurrency=args.concurrency, rates=args.rate, distribution=args.distribution,
        duration_s=args.duration, requests=args.requests, warmup_s=args.warmup,
        batch_size=args.batch_size, shapes=dict(args.shape), data=args.data,
        reference=args.reference, output=args.output, top_k=args.top_k,
        max_outstanding=args.max_outstanding, intra_op_threads=args.intra_op_threads,
        timeout_s=args.timeout, server_pid=args.server_pid, seed=args.seed)
