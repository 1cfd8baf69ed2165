"""``kiln convert``: a PyTorch, Keras/TensorFlow or scikit-learn model to ONNX, parity checked.

Exit status: 0 converted and written, 1 the model cannot be converted or the parity check
failed (nothing is written), 2 bad options.
"""

from __future__ import annotations

import argparse
import json
import os
import warnings
from pathlib import Path
from typing import Any

from kiln.errors import KilnError


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "convert", help="convert a PyTorch, Keras/TensorFlow or scikit-learn model to ONNX",
        description="Convert a model file to ONNX, check that the ONNX model gives the "
        "original's results, and write it (with a manifest) to a file or a model repository.")
    parser.add_argument("model", type=Path, help=".pt2 / TorchScript, .keras / .h5 / "
                        "SavedModel folder, or .joblib / .pkl (with --allow-pickle)")
    parser.add_argument("--framework", choices=["torch", "keras", "sklearn"],
                        help="default: from the file")
    parser.add_argument("--example", type=Path, metavar="FILE",
                        help="example inputs: .npy (one input) or .npz (arrays by input name)")
    parser.add_argument("--input", action="append", dest="inputs", metavar="NAME:TYPE:DIMS",
                        help="declare an input, e.g. pixels:FP32:-1,784 (-1 = dynamic)")
    parser.add_argument("--output-name", action="append", dest="output_names", metavar="NAME",
                        help="name the outputs in order")
    parser.add_argument("--opset", type=int, help="ONNX opset (default: %(default)s)")
    parser.add_argument("--tolerance", action="append", default=[], metavar="TYPE=ATOL[,RTOL]",
                        help="parity tolerance for one output datatype, e.g. FP32=1e-5,1e-4")
    parser.add_argument("--batch-sizes", default="1,2,16",
                        help="batch sizes of generated parity inputs (default: %(default)s)")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="load .joblib/.pkl files (this runs code from the file)")
    parser.add_argument("-o", "--output", type=Path, help="write the ONNX file here")
    parser.add_argument("--repository", type=Path, help="write into this model repository")
    parser.add_argument("--name", help="model name in the repository")
    parser.add_argument("--version", type=int, default=1, help="version (default: 1)")
    parser.add_argument("--max-batch-size", type=int, help="for config.yaml (default: 64 "
                        "when the batch is dynamic)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing version")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(stderr=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings("ignore")  # framework deprecation noise; errors still surface
    try:
        options = _options(args)
    except KilnError as exc:
        console.print(f"kiln convert: {exc.message}", markup=False)
        return 2
    try:
        with console.status("converting") as status:
            result = _convert(args, options, lambda text: status.update(text))
            target = _write(args, result)
    except KilnError as exc:
        return _failed(args, console, exc)
    manifest_path = _manifest_path(args, target)
    manifest = json.loads(manifest_path.read_text())
    if args.json:
        print(json.dumps({"ok": True, "path": str(target), "manifest": str(manifest_path),
                          **manifest}, indent=2))
    else:
        _print_summary(Console(), result, target, manifest["files"][target.name]["sha256"])
    return 0


def _options(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from kiln.convert import DEFAULT_OPSET, parse_tensor_spec
    from kiln.errors import InvalidArgument

    if args.repository is not None and not args.name:
        raise InvalidArgument("--repository needs --name")
    if args.repository is not None and args.output is not None:
        raise InvalidArgument("give --output or --repository, not both")
    try:
        batch_sizes = tuple(int(b) for b in args.batch_sizes.split(","))
    except ValueError:
        raise InvalidArgument(f"--batch-sizes '{args.batch_sizes}': expected e.g. 1,2,16") from None
    examples: Any = None
    if args.example is not None:
        loaded = np.load(args.example, allow_pickle=False)
        examples = dict(loaded) if args.example.suffix == ".npz" else loaded
    return {"example_inputs": examples, "batch_sizes": batch_sizes,
            "inputs": [parse_tensor_spec(t) for t in args.inputs or []] or None,
            "output_names": args.output_names, "framework": args.framework,
            "opset": args.opset or DEFAULT_OPSET, "allow_pickle": args.allow_pickle,
            "tolerances": dict(_tolerance(t) for t in args.tolerance) or None}


def _tolerance(text: str) -> tuple[Any, Any]:
    from kiln.convert import Tolerance
    from kiln.errors import InvalidArgument
    from kiln.tensors import DataType

    try:
        name, _, values = text.partition("=")
        atol, _, rtol = values.partition(",")
        return DataType.from_any(name), Tolerance(float(atol), float(rtol or 0.0))
    except ValueError as exc:
        raise InvalidArgument(f"--tolerance '{text}': expected TYPE=ATOL[,RTOL]: {exc}") from None


def _convert(args: argparse.Namespace, options: dict[str, Any], progress: Any) -> Any:
    from kiln.convert import convert

    return convert(args.model, progress=progress, **options)


def _write(args: argparse.Namespace, result: Any) -> Path:
    if args.repository is not None:
        folder: Path = result.save_to_repository(
            args.repository, name=args.name, version=args.version,
            max_batch_size=args.max_batch_size, overwrite=args.overwrite)
        return folder / "model.onnx"
    output = args.output or args.model.with_suffix(".onnx")
    if output.exists() and not args.overwrite:
        from kiln.convert import ConversionError

        raise ConversionError(f"'{output}' already exists; pass --overwrite to replace it")
    saved: Path = result.save(output)
    return saved


def _manifest_path(args: argparse.Namespace, target: Path) -> Path:
    from kiln.repository.manifest import MANIFEST_NAME
    from kiln.repository.write import file_manifest_path

    if args.repository is not None:
        return target.parent / MANIFEST_NAME
    return file_manifest_path(target)


def _failed(args: argparse.Namespace, console: Any, exc: KilnError) -> int:
    report = getattr(exc, "report", None)
    if args.json:
        print(json.dumps({"ok": False, "error": exc.message,
                          "parity": report.as_dict() if report is not None else None}, indent=2))
        return 1
    if report is not None:
        console.print(_parity_table(report))
    console.print(f"kiln convert: {exc.message} (nothing written)", markup=False)
    return 1


def _print_summary(console: Any, result: Any, target: Path, sha256: str) -> None:
    source = result.source
    console.print(f"[bold]{source.framework} {source.framework_version}[/] -> ONNX opset "
                  f"{result.opset} with {source.converter} {source.converter_version}")
    console.print(_parity_table(result.parity))
    console.print(f"wrote {target} (sha256 {sha256})", markup=False)


def _parity_table(report: Any) -> Any:
    from rich.table import Table

    table = Table(title=f"parity on {len(report.input_sets)} input sets "
                  f"({', '.join(report.input_sets)})")
    for column in ("output", "datatype", "max abs error", "max rel error", "atol", "rtol", ""):
        table.add_column(column, justify="left" if column in ("output", "") else "right")
    for o in report.outputs:
        table.add_row(o.name, o.datatype, f"{o.max_abs_error:.3g}", f"{o.max_rel_error:.3g}",
                      f"{o.atol:g}", f"{o.rtol:g}", "[green]ok[/]" if o.passed else
                      f"[red]FAILED[/] ({o.worst})")
    return table
