"""What an ONNX model file must pass before a runtime sees it (the ONNX backends' ``admit``).

* The file is an ``.onnx`` file, read through the repository's ``VersionFiles`` (no links,
  manifest checked, decrypted in memory); never pickle or any other format that runs code
  when loaded.
* Operator domains: only ONNX's own, ONNX-ML, ONNX Runtime's built-in ``com.microsoft``
  operators and the model's own functions. A node from any other domain would need a
  custom-op library, and kiln never loads those (least of all from the repository).
* External data (weights kept beside the model): each ``location`` must be a plain relative
  path that stays inside the version folder, with no symbolic link on the way and no
  second hard link (``VersionFiles.check``); only the keys ONNX defines, each once;
  ``offset`` and ``length`` non-negative and inside the file. These are the checks ONNX and
  ONNX Runtime added after CVE-2022-25882 and CVE-2024-27318, done here whatever their
  installed versions do. An encrypted model may not use external data (it would be plain).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from onnx import AttributeProto, GraphProto, ModelProto, TensorProto

from kiln.errors import InvalidModel
from kiln.runtime.base import ModelArtifact, VersionFiles

#: Operator domains any model may use.
ALLOWED_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft"})
_EXTERNAL_KEYS = frozenset({"location", "offset", "length", "checksum"})
_DIGITS = re.compile(r"[0-9]{1,20}")


#: Model file suffixes the ONNX backends load.
ONNX_SUFFIX = ".onnx"


def admit_onnx(files: VersionFiles, filename: str) -> ModelArtifact:
    """Read ``filename`` through ``files`` and check it as an ONNX model."""
    if not filename.endswith(ONNX_SUFFIX):
        raise InvalidModel(f"model file '{filename[:80]}' is not an ONNX file; kiln loads "
                           "ONNX models only (never pickle, torch.save or other formats "
                           "that run code when loaded)")
    stored = files.read(filename)
    model = parse_model(stored.data)
    check_domains(model)
    external = external_files(model, files)
    if external and stored.sealed:
        raise InvalidModel("an encrypted model may not keep weights in external data "
                           f"files ({', '.join(external)})")
    return ModelArtifact(path=stored.path, content=stored.data)


def parse_model(content: bytes) -> ModelProto:
    model = ModelProto()
    try:
        model.ParseFromString(content)
    except Exception as exc:  # protobuf's DecodeError, or a RecursionError on deep nesting
        raise InvalidModel(f"the model file is not a valid ONNX model ({exc})") from None
    if not model.HasField("graph"):
        raise InvalidModel("the model file is not a valid ONNX model (it has no graph)")
    return model


def check_domains(model: ModelProto) -> None:
    """Refuse operators from domains outside ``ALLOWED_DOMAINS`` and the model's functions."""
    allowed = ALLOWED_DOMAINS | {f.domain for f in model.functions}
    nodes = [n for g in _graphs(model.graph) for n in g.node]
    nodes += [n for f in model.functions for n in f.node]
    unknown = sorted({n.domain for n in nodes} - allowed)
    if unknown:
        raise InvalidModel(f"the model uses operators from domain(s) {', '.join(unknown)}, "
                           "which need custom-op libraries; kiln loads only ONNX, ONNX-ML "
                           "and ONNX Runtime (com.microsoft) operators")


def external_files(model: ModelProto, files: VersionFiles) -> list[str]:
    """Check every external-data reference; returns the distinct files, relative to the
    version folder."""
    names: list[str] = []
    for tensor in _tensors(model):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        entries = [(e.key, e.value) for e in tensor.external_data]
        keys = [k for k, _ in entries]
        if len(keys) != len(set(keys)) or not set(keys) <= _EXTERNAL_KEYS:
            raise InvalidModel(f"tensor '{tensor.name[:64]}': external_data keys {keys} must "
                               f"be distinct and among {sorted(_EXTERNAL_KEYS)}")
        info = dict(entries)
        location = info.get("location", "")
        try:
            size = files.check(location)
        except InvalidModel as exc:
            raise InvalidModel(f"tensor '{tensor.name[:64]}': external data "
                               f"{exc.message}") from None
        offset, length = _integer(info, "offset") or 0, _integer(info, "length")
        end = offset + (length or 0)
        if offset > size or end > size:
            raise InvalidModel(f"tensor '{tensor.name[:64]}': offset {offset} and length "
                               f"{length} reach past the end of {location} ({size} bytes)")
        if location not in names:
            names.append(location)
    return names


def _integer(info: dict[str, str], key: str) -> int | None:
    value = info.get(key)
    if value is None:
        return None
    if not _DIGITS.fullmatch(value):
        raise InvalidModel(f"external data {key} '{value[:32]}' must be a non-negative "
                           "integer")
    return int(value)


def _graphs(graph: GraphProto) -> Iterator[GraphProto]:
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == AttributeProto.GRAPH:
                yield from _graphs(attribute.g)
            elif attribute.type == AttributeProto.GRAPHS:
                for sub in attribute.graphs:
                    yield from _graphs(sub)


def _tensors(model: ModelProto) -> Iterator[TensorProto]:
    for graph in _graphs(model.graph):
        yield from graph.initializer
        yield from (s.values for s in graph.sparse_initializer)
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.type == AttributeProto.TENSOR:
                    yield attribute.t
                elif attribute.type == AttributeProto.TENSORS:
                    yield from attribute.tensors
