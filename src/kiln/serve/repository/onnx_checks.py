"""Static checks on an ONNX model before ONNX Runtime sees it.

* Operator domains: only ONNX's own, ONNX-ML, ONNX Runtime's built-in ``com.microsoft``
  operators and the model's own functions. A node from any other domain would need a
  custom-op library, and kiln never loads those (least of all from the repository).
* External data (weights kept beside the model): each ``location`` must be a plain relative
  path that stays inside the version folder, with no symbolic link on the way and no
  second hard link; only the keys ONNX defines, each once; ``offset`` and ``length``
  non-negative and inside the file. These are the checks ONNX and ONNX Runtime added after
  CVE-2022-25882 and CVE-2024-27318, done here whatever their installed versions do.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

from onnx import AttributeProto, GraphProto, ModelProto, TensorProto

from kiln.errors import InternalError

#: Operator domains any model may use.
ALLOWED_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft"})
_EXTERNAL_KEYS = frozenset({"location", "offset", "length", "checksum"})
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")
_DIGITS = re.compile(r"[0-9]{1,20}")


def parse_model(content: bytes) -> ModelProto:
    model = ModelProto()
    try:
        model.ParseFromString(content)
    except Exception as exc:  # protobuf's DecodeError, or a RecursionError on deep nesting
        raise InternalError(f"the model file is not a valid ONNX model ({exc})") from None
    if not model.HasField("graph"):
        raise InternalError("the model file is not a valid ONNX model (it has no graph)")
    return model


def check_domains(model: ModelProto) -> None:
    """Refuse operators from domains outside ``ALLOWED_DOMAINS`` and the model's functions."""
    allowed = ALLOWED_DOMAINS | {f.domain for f in model.functions}
    nodes = [n for g in _graphs(model.graph) for n in g.node]
    nodes += [n for f in model.functions for n in f.node]
    unknown = sorted({n.domain for n in nodes} - allowed)
    if unknown:
        raise InternalError(f"the model uses operators from domain(s) {', '.join(unknown)}, "
                            "which need custom-op libraries; kiln loads only ONNX, ONNX-ML "
                            "and ONNX Runtime (com.microsoft) operators")


def external_files(model: ModelProto, folder: Path) -> list[str]:
    """Check every external-data reference; returns the distinct files, relative to
    ``folder``."""
    names: list[str] = []
    for tensor in _tensors(model):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        entries = [(e.key, e.value) for e in tensor.external_data]
        keys = [k for k, _ in entries]
        if len(keys) != len(set(keys)) or not set(keys) <= _EXTERNAL_KEYS:
            raise InternalError(f"tensor '{tensor.name[:64]}': external_data keys {keys} must "
                                f"be distinct and among {sorted(_EXTERNAL_KEYS)}")
        info = dict(entries)
        location = info.get("location", "")
        size = _check_location(location, folder, tensor.name)
        offset, length = _integer(info, "offset") or 0, _integer(info, "length")
        end = offset + (length or 0)
        if offset > size or end > size:
            raise InternalError(f"tensor '{tensor.name[:64]}': offset {offset} and length "
                                f"{length} reach past the end of {location} ({size} bytes)")
        if location not in names:
            names.append(location)
    return names


def _check_location(location: str, folder: Path, tensor: str) -> int:
    """The file's size, once ``location`` is shown to be a safe file inside ``folder``."""
    parts = location.split("/")
    if (not location or location.startswith(("/", "\\")) or "\\" in location
            or _WINDOWS_DRIVE.match(location) or any(p in ("", ".", "..") for p in parts)
            or "\0" in location):
        raise InternalError(f"tensor '{tensor[:64]}': external data location "
                            f"'{location[:80]}' must be a plain relative path inside the "
                            "version folder (no '..', no absolute or drive paths)")
    path = folder
    for part in parts:
        path = path / part
        try:
            info = os.lstat(path)
        except OSError:
            raise InternalError(f"tensor '{tensor[:64]}': external data file "
                                f"'{location[:80]}' does not exist") from None
        if stat.S_ISLNK(info.st_mode):
            raise InternalError(f"tensor '{tensor[:64]}': external data path "
                                f"'{location[:80]}' goes through a symbolic link")
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        raise InternalError(f"tensor '{tensor[:64]}': external data '{location[:80]}' must "
                            "be a regular file with a single hard link")
    return info.st_size


def _integer(info: dict[str, str], key: str) -> int | None:
    value = info.get(key)
    if value is None:
        return None
    if not _DIGITS.fullmatch(value):
        raise InternalError(f"external data {key} '{value[:32]}' must be a non-negative "
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
