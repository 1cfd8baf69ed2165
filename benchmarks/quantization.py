"""Quantization targets, measured side by side in one run (ratios of medians).

MiniLM-L6: kiln's accuracy-aware mode (``--metric cosine --max-drop 0.005``, no hand-picked
exclusions) against FP32 ONNX Runtime, with dynamic and static int8 for context: throughput
at batch 32 x 128 tokens, batch-1 latency at 128 tokens, mean/min cosine over 500 real
sentences (CPython docstrings, disjoint from the calibration text).
Digits CNN (the findings' 64-128-256 shape): FP32 vs static int8 accuracy on the test split,
speed at batch 1 and 256, and the weight-only b-bit sweep per-tensor vs per-channel.

    python -m benchmarks.quantization [--threads 1] [--rounds 7] [--skip-minilm] [--skip-cnn]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tests.optimize.cnn import export_cnn, train_cnn
from tests.sentences import sentences

from kiln.data import inputs
from kiln.optimize import CalibrationData, QuantizeOptions, Recipe, quantize
from kiln.optimize.api import model_signature
from kiln.optimize.evaluate import Evaluator
from kiln.optimize.speed import measure

EVAL_SENTENCES = 500


def _table(title: str, header: list[str], rows: list[list[str]]) -> None:
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def _minilm_data(signature: object) -> tuple[CalibrationData, inputs.Dataset, dict]:
    from kiln.convert.minilm import tokenize

    texts = sentences(EVAL_SENTENCES)
    evaluation = inputs.Dataset([tokenize(texts[i:i + 25]) for i in range(0, len(texts), 25)],
                                None, f"{EVAL_SENTENCES} docstring sentences")
    # 64 single sentences + 64 full 128-token windows (the findings' calibration mix)
    singles = [tokenize([t]) for t in sentences(64, 1000)]
    windows = [tokenize([" ".join(sentences(10, 1100 + 10 * i))]) for i in range(64)]
    long = tokenize([" ".join(sentences(12, 1500 + 12 * i)) for i in range(32)])
    assert long["input_ids"].shape == (32, 128)
    return CalibrationData(singles + windows, source="docstrings"), evaluation, long


def minilm(work: Path, args: argparse.Namespace) -> None:
    from kiln.convert.minilm import export_minilm

    started = time.perf_counter()
    fp32 = export_minilm(work / "repo")
    calibration, evaluation, long = _minilm_data(model_signature(fp32))
    options = QuantizeOptions(metric="cosine", speed_rounds=0, threads=args.threads)
    auto = quantize(fp32, calibration=calibration, evaluation=evaluation,
                    options=QuantizeOptions(metric="cosine", max_drop=0.005, speed_rounds=0,
                                            threads=args.threads))
    print(f"accuracy-aware mode chose: {auto.report.recipe_label} ({auto.report.message})")
    variants = [("ONNX Runtime FP32", fp32, "onnxruntime")]
    for label, recipe in (("ORT dynamic int8 per-channel", Recipe(method="dynamic")),
                          ("ORT static int8 (SmoothQuant 0.95)", Recipe(method="static"))):
        result = quantize(fp32, recipe=recipe, calibration=calibration, evaluation=evaluation,
                          options=options)
        variants.append((label, result.save(work / f"{recipe.method}.onnx"), result.backend))
    variants.append((f"kiln auto: {auto.report.recipe_label}", auto.save(work / "auto.onnx"),
                     auto.backend))
    evaluator = Evaluator(fp32, evaluation.requests, metric="cosine", threads=args.threads)
    quality = [evaluator.measure(path, backend) for _, path, backend in variants]
    speeds = measure([(p, b) for _, p, b in variants], long, batch_size=32, rounds=args.rounds,
                     threads=args.threads)
    base = speeds[0]
    rows = [[label, f"{path.stat().st_size / 1e6:.1f}", f"{s.batch1_ms:.1f}",
             f"{base.batch1_ms / s.batch1_ms:.2f}x", f"{s.rows_per_s:.1f}",
             f"{s.rows_per_s / base.rows_per_s:.2f}x", f"{q.cosine_mean:.4f}",
             f"{q.cosine_min:.4f}"]
            for (label, path, _), s, q in zip(variants, speeds, quality, strict=True)]
    _table(f"MiniLM-L6, {args.threads} thread(s), medians of {args.rounds} batch-32 / "
           f"{4 * args.rounds} batch-1 interleaved runs, seq 128",
           ["variant", "MB", "b1 ms", "b1 speed-up", "b32 seq/s", "b32 vs FP32",
            "mean cos", "min cos"], rows)
    print(f"\n(MiniLM part took {time.perf_counter() - started:.0f} s; trials: "
          f"{[(t['recipe'], round(t['drop'], 5)) for t in auto.report.trials]})")


def cnn(work: Path, args: argparse.Namespace) -> None:
    import torch

    from kiln.examples.digits import load_split

    torch.set_num_threads(2)
    x_train, x_test, y_train, y_test = load_split()
    model = train_cnn(x_train, y_train, widths=(64, 128, 256), epochs=args.epochs)
    fp32 = export_cnn(model, work / "cnn.onnx", x_test[:8])
    signature = model_signature(fp32)
    calibration = CalibrationData.from_arrays({"image": x_train[:256].reshape(-1, 1, 8, 8)},
                                              signature)
    evaluation = inputs.Dataset(inputs.split_rows({"image": x_test.reshape(-1, 1, 8, 8)},
                                                  signature, 64), y_test, "digits test split")
    options = QuantizeOptions(speed_rounds=args.rounds * 4, batch_size=256, threads=args.threads)
    static = quantize(fp32, recipe=Recipe(method="static"), calibration=calibration,
                      evaluation=evaluation, options=options).report
    f, q = static.speed["fp32"], static.speed["quantized"]
    _table(f"Digits CNN (64-128-256), {len(y_test)} test images, {args.threads} thread(s)",
           ["variant", "kB", "accuracy %", "b1 µs", "b1 speed-up", "b256 ms", "b256 speed-up"],
           [["ONNX Runtime FP32", f"{static.size_before / 1e3:.0f}",
             f"{static.fp32['value'] * 100:.2f}", f"{f['batch1_ms'] * 1e3:.0f}", "1.00x",
             f"{f['batch_ms']:.2f}", "1.00x"],
            ["ORT static int8 QDQ per-channel", f"{static.size_after / 1e3:.0f}",
             f"{static.quantized['value'] * 100:.2f}", f"{q['batch1_ms'] * 1e3:.0f}",
             f"{f['batch1_ms'] / q['batch1_ms']:.2f}x", f"{q['batch_ms']:.2f}",
             f"{f['batch_ms'] / q['batch_ms']:.2f}x"]])
    sweep = quantize(fp32, recipe=Recipe(method="weight-only"), evaluation=evaluation,
                     options=QuantizeOptions(speed_rounds=0)).report.sweep
    points = {(p.granularity, p.bits): p for p in sweep}
    _table("Digits CNN, weight-only b-bit sweep (accuracy %, file kB)",
           ["bits", "per-tensor", "per-channel"],
           [[str(b), *(f"{points[g, b].value * 100:.2f} ({points[g, b].size_bytes / 1e3:.0f})"
                       for g in ("tensor", "channel"))] for b in (8, 6, 4, 3, 2)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--skip-minilm", action="store_true")
    parser.add_argument("--skip-cnn", action="store_true")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="kiln-quant-bench-") as folder:
        if not args.skip_cnn:
            cnn(Path(folder), args)
        if not args.skip_minilm:
            minilm(Path(folder), args)
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
