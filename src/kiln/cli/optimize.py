"""``kiln optimize quantize``: an ONNX model quantized, checked against FP32 and measured.

Exit status: 0 written (and within ``--max-drop`` when given), 1 the model could not be
quantized (nothing written), 2 bad options, 3 no recipe met ``--max-drop``: the best model
found is written anyway, with the report saying by how much it misses.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path
from typing import Any

from kiln.errors import KilnError

BUDGET_MISSED = 3


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "optimize", help="make a model smaller and faster (quantization), accuracy checked",
        description="Optimize an ONNX model; the result is checked against the original.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    quantize = actions.add_parser(
        "quantize", help="int8 (dynamic, static, OpenVINO) or b-bit weight-only quantization",
        description="Quantize MODEL.onnx, measure it against the FP32 model (quality on "
        "held-back data, size, batch-1 latency and batch throughput side by side) and write it "
        "with a manifest and a report. With --max-drop, candidates are tried fastest first and "
        "the nodes that add the most error fall back to FP32 until the budget holds.")
    quantize.add_argument("model", type=Path, help="the FP32 ONNX model")
    _output_options(quantize)
    _recipe_options(quantize)
    _check_options(quantize)


def _output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", type=Path, help="write the quantized model here")
    parser.add_argument("--repository", type=Path, help="write into this model repository")
    parser.add_argument("--name", help="model name in the repository")
    parser.add_argument("--version", type=int, default=1, help="version (default: 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def _recipe_options(parser: argparse.ArgumentParser) -> None:
    from kiln.optimize.recipe import CALIBRATION_METHODS, GRANULARITIES, METHODS

    parser.add_argument("--method", choices=["auto", *METHODS], default="auto",
                        help="default: auto (openvino, static, dynamic: the first that the "
                        "data and installed packages allow, or that meets --max-drop)")
    parser.add_argument("--per-tensor", action="store_true",
                        help="one int8 scale per weight tensor (default: per channel)")
    parser.add_argument("--calibrate", choices=CALIBRATION_METHODS, default="minmax",
                        help="how static quantization finds activation ranges")
    parser.add_argument("--symmetric-activations", action="store_true",
                        help="static: int8 activations instead of uint8")
    parser.add_argument("--op-types", help="comma-separated op types to quantize "
                        "(default: the weighted ones: MatMul, Gemm, Conv, ...)")
    parser.add_argument("--exclude-node", action="append", default=[], metavar="NAME",
                        help="keep this node in FP32 (repeatable)")
    parser.add_argument("--smoothquant-alpha", type=float, metavar="ALPHA",
                        help="static: SmoothQuant strength (default 0.95 on transformers; 0 off)")
    parser.add_argument("--quantize-matmul-outputs", action="store_true",
                        help="static: quantize MatMul/Gemm outputs too (hurts transformers)")
    parser.add_argument("--no-embeddings", action="store_true",
                        help="leave embedding tables (Gather) in FP32")
    parser.add_argument("--bits", type=int, default=8, help="weight-only: 2 to 8 (default 8)")
    parser.add_argument("--granularity", choices=GRANULARITIES, default="channel",
                        help="weight-only: one range per tensor, channel or group")
    parser.add_argument("--group-size", type=int, default=32, help="weight-only groups")


def _check_options(parser: argparse.ArgumentParser) -> None:
    from kiln.optimize.evaluate import METRICS

    parser.add_argument("--calibration", metavar="DATA", help="calibration inputs: .npz file "
                        "(arrays named after the inputs), folder of them, or a scikit-learn "
                        "dataset name")
    parser.add_argument("--calibration-samples", type=int, default=128,
                        help="samples used for calibration at most (default 128)")
    parser.add_argument("--eval", dest="eval_data", metavar="DATA",
                        help="held-back data to measure quality on (labels give accuracy)")
    parser.add_argument("--metric", choices=METRICS,
                        help="default: accuracy with labels, else cosine")
    parser.add_argument("--max-drop", type=float, help="allowed drop: accuracy points, "
                        "1 - mean cosine, or mean abs error; turns on the accuracy-aware search")
    parser.add_argument("--max-trials", type=int, default=8, help="builds the search may try")
    parser.add_argument("--no-sweep", action="store_true", help="weight-only: skip the sweep")
    parser.add_argument("--batch-size", type=int, default=32, help="throughput batch rows")
    parser.add_argument("--speed-rounds", type=int, default=10,
                        help="timing rounds (0 skips the speed measurement)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads when measuring")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(stderr=True)
    warnings.filterwarnings("ignore")  # framework deprecation noise; errors still surface
    try:
        job = _job(args)
    except KilnError as exc:
        console.print(f"kiln optimize: {exc.message}", markup=False)
        return 2
    try:
        from kiln.optimize import quantize

        with console.status("quantizing") as status:
            result = quantize(args.model, progress=lambda text: status.update(text), **job)
            target = _write(args, result)
    except KilnError as exc:
        console.print(f"kiln optimize: {exc.message} (nothing written)", markup=False)
        return 1
    report = result.report
    if args.json:
        print(json.dumps({"ok": True, "path": str(target), **report.model_dump()}, indent=2))
    else:
        _print_summary(Console(), report, target)
    return BUDGET_MISSED if report.met is False else 0


def _job(args: argparse.Namespace) -> dict[str, Any]:
    from kiln.errors import InvalidArgument
    from kiln.optimize import QuantizeOptions

    if args.repository is not None and not args.name:
        raise InvalidArgument("--repository needs --name")
    if (args.repository is None) == (args.output is None):
        raise InvalidArgument("give -o/--output or --repository (one of them)")
    if not args.model.is_file():
        raise InvalidArgument(f"model '{args.model}' is not a file")
    if args.output is not None and args.output.exists() and not args.overwrite:
        raise InvalidArgument(f"'{args.output}' already exists; pass --overwrite to replace it")
    options = QuantizeOptions(metric=args.metric, max_drop=args.max_drop,
                              max_trials=args.max_trials, batch_size=args.batch_size,
                              speed_rounds=args.speed_rounds, threads=args.threads,
                              sweep_bits=() if args.no_sweep else QuantizeOptions().sweep_bits)
    calibration, evaluation = _data(args)
    return {"recipe": _recipe(args), "calibration": calibration, "evaluation": evaluation,
            "options": options}


def _recipe(args: argparse.Namespace) -> Any:
    from kiln.optimize import Recipe

    if args.method == "auto":
        if args.exclude_node:
            from kiln.errors import InvalidArgument

            raise InvalidArgument("--exclude-node needs a --method (auto chooses its own)")
        return None
    op_types = tuple(t.strip() for t in args.op_types.split(",")) if args.op_types else None
    return Recipe(method=args.method, per_channel=not args.per_tensor,
                  symmetric_activations=args.symmetric_activations, calibration=args.calibrate,
                  op_types=op_types, exclude_nodes=tuple(args.exclude_node),
                  smoothquant_alpha=args.smoothquant_alpha,
                  quantize_matmul_outputs=args.quantize_matmul_outputs, bits=args.bits,
                  granularity=args.granularity, group_size=args.group_size,
                  embeddings=not args.no_embeddings)


def _data(args: argparse.Namespace) -> tuple[Any, Any]:
    from kiln.data import inputs
    from kiln.optimize import CalibrationData
    from kiln.optimize.api import model_signature

    if args.calibration is None and args.eval_data is None:
        return None, None
    signature = model_signature(args.model)
    calibration = (CalibrationData.load(args.calibration, signature,
                                        limit=args.calibration_samples)
                   if args.calibration else None)
    evaluation = inputs.load(args.eval_data, signature, batch_size=16) if args.eval_data else None
    return calibration, evaluation


def _write(args: argparse.Namespace, result: Any) -> Path:
    if args.repository is not None:
        folder: Path = result.save_to_repository(args.repository, name=args.name,
                                                 version=args.version, overwrite=args.overwrite)
        return folder / "model.onnx"
    saved: Path = result.save(args.output)
    return saved


def _print_summary(console: Any, report: Any, target: Path) -> None:
    from rich.table import Table

    table = Table(title=f"{report.recipe_label} (run by {report.backend})")
    for column in ("", "FP32", "quantized", "ratio"):
        table.add_column(column, justify="left" if not column else "right")
    for row in report.rows():
        table.add_row(*row)
    console.print(table)
    if report.fp32_nodes:
        console.print(f"kept in FP32: {', '.join(report.fp32_nodes)}", markup=False)
    style = "red" if report.met is False else "green"
    console.print(f"[{style}]{report.message}[/]")
    console.print(f"wrote {target}", markup=False)
