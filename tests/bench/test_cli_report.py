"""``kiln bench compare`` from the command line, and its HTML report opened in headless
Chromium: the page must render every plot without fetching anything."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from kiln.bench import BenchReport
from kiln.cli.main import main
from kiln.examples.digits import INPUT, LABEL, load_split
from kiln.serve.settings import bundled_repository
from tests.server import unused_port

MODEL = bundled_repository() / "digits" / "1" / "model.onnx"
CHROMIUM = "/usr/bin/chromium"


def _perturbed(path: Path) -> Path:
    """The digits model with noise added to its float weights: a stand-in 'optimized' model."""
    model = onnx.load(str(MODEL))
    rng = np.random.default_rng(0)
    for index, tensor in enumerate(model.graph.initializer):
        array = numpy_helper.to_array(tensor)
        if array.dtype == np.float32 and array.size > 1:
            noisy = array + rng.normal(0, 0.02, array.shape).astype(np.float32)
            model.graph.initializer[index].CopyFrom(numpy_helper.from_array(noisy, tensor.name))
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    folder = tmp_path_factory.mktemp("compare")
    other = _perturbed(folder / "perturbed.onnx")
    out = folder / "out"
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.setenv("COLUMNS", "160")
        code = main(["bench", "compare", str(MODEL), str(other), "--data", "digits",
                     "-c", "1,2", "-n", "100", "--warmup", "0.05", "--rate", "400",
                     "--report", str(out)])
    assert code == 0
    return out, str(other), printed.getvalue()


def test_compare_report_numbers(compared: tuple[Path, str, str]) -> None:
    out, other, printed = compared
    report = BenchReport.load_json(out / "report.json")
    assert report.reference == str(MODEL) and report.data_source == "digits"
    original, perturbed = report.targets
    assert (original.label, perturbed.label) == ("digits/1/model.onnx", "perturbed.onnx")
    for target in report.targets:
        assert [(p.mode, p.concurrency if p.mode == "closed" else p.rate)
                for p in target.points] == [("closed", 1), ("closed", 2), ("open", 400.0)]
        assert all(p.sent == p.ok == 100 for p in target.points)
        assert target.accuracy is not None and target.accuracy.samples == 360
    same = {a.output: a for a in original.agreement}
    assert same["probabilities"].max_abs_error == 0 and same["label"].exact_match == 1
    moved = {a.output: a for a in perturbed.agreement}
    assert 0 < moved["probabilities"].max_abs_error < 1
    assert 0.9 < moved["probabilities"].cosine_mean < 1
    _, x, _, y = load_split()
    want, got = (ort.InferenceSession(path).run([LABEL], {INPUT: x})[0]
                 for path in (str(MODEL), other))
    assert moved["label"].exact_match == pytest.approx(np.mean(got == want))
    assert perturbed.accuracy.top1 == pytest.approx(np.mean(got == y))  # type: ignore[union-attr]
    assert original.accuracy.top1 == pytest.approx(np.mean(want == y))  # type: ignore[union-attr]
    for title in ("Latency and throughput", "Accuracy", "Agreement with", "perturbed.onnx"):
        assert title in printed
    assert f"wrote {out / 'report.json'} and {out / 'report.html'}" in printed


def test_html_report_renders_offline_in_chromium(compared: tuple[Path, str, str]) -> None:
    from playwright.sync_api import sync_playwright

    out, _, _ = compared
    if not Path(CHROMIUM).exists():
        pytest.fail(f"this test opens the report in Debian's chromium ({CHROMIUM}): "
                    "apt-get install chromium (.ci/run installs it)")
    requests: list[str] = []
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking"])
        try:
            page = browser.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: m.type == "error" and problems.append(m.text))
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto((out / "report.html").as_uri())
            figures = page.eval_on_selector_all("figure", """figures => figures.map(f => {
                const svg = f.querySelector('svg');
                const box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
                return {caption: f.querySelector('figcaption').textContent,
                        width: box.width, height: box.height,
                        paths: svg ? svg.querySelectorAll('path').length : 0};
            })""")
            tables = page.eval_on_selector_all("table", "ts => ts.map(t => t.rows.length)")
            title = page.title()
        finally:
            browser.close()
    assert title == "kiln bench report"
    assert [f["caption"] for f in figures] == [
        "Latency percentiles vs concurrency", "Throughput vs concurrency",
        "Latency vs request rate (open loop)", "Latency histograms",
        "Accuracy vs size vs speed"]
    for figure in figures:
        assert figure["width"] > 300 and figure["height"] > 200, figure
        assert figure["paths"] > 20, figure  # axes, ticks, lines and glyphs were drawn
    assert tables == [1 + 6, 1 + 2, 1 + 4]  # load points, accuracy, agreement (+ headers)
    assert all(url.startswith("file://") for url in requests), requests
    assert not problems


def test_cli_errors_name_the_fix(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "http://127.0.0.1:8000"]) == 2
    assert "name the model with --model" in capsys.readouterr().err
    assert main(["bench", "no-such-model.onnx"]) == 2
    assert "neither a model file nor a URL" in capsys.readouterr().err
    assert main(["bench", f"grpc://127.0.0.1:{unused_port()}", "-m", "digits",
                 "--timeout", "2"]) == 2
    assert "metadata" in capsys.readouterr().err
    assert main(["bench", f"http://127.0.0.1:{unused_port()}", "-m", "digits"]) == 2
    assert "cannot connect" in capsys.readouterr().err
