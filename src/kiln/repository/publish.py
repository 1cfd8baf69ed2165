"""The publish protocol: when a version folder is complete enough to load.

A folder being copied into a repository is visible before its files are whole, so a server
that follows the repository (``--model-control-mode poll``) must not load it on sight. A
version folder counts as *published* when it holds either

- ``manifest.json`` listing its files with their SHA-256 (the form ``kiln convert`` writes)::

      {"files": {"model.onnx": {"sha256": "<64 hex digits>", "bytes": 90392019}}}

  and every listed file is present with that size (when given; the digests are checked when
  the version loads, over the very bytes loaded: ``kiln.repository.manifest``); or
- an empty file named ``READY``, written after everything else.

Staging the folder under a name that is not a version number (``.staging-3``, ``3.tmp``)
and renaming it into place, marker included, publishes it atomically. A manifest is checked
in every control mode; the marker is required only where ``require_marker`` says so.
"""

from __future__ import annotations

import os
from pathlib import Path

from kiln.errors import InvalidModel, Unavailable
from kiln.repository.manifest import MANIFEST_NAME as MANIFEST
from kiln.repository.manifest import read_manifest

MARKER = "READY"

#: A cheap fingerprint of a folder's files: (relative path, size, mtime_ns, is a link).
Stamp = tuple[tuple[str, int, int, bool], ...]


class NotPublished(Unavailable):
    """A version folder is incomplete, does not match its manifest, or leaves its model."""


def stamp(path: Path) -> Stamp:
    """Fingerprint every file under ``path`` (links not followed); changes when a file does."""
    entries = []
    for folder, dirs, files in os.walk(path, followlinks=False):
        for name in sorted(files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]):
            full = os.path.join(folder, name)
            try:
                info = os.lstat(full)
            except OSError:  # removed while walking: the next scan sees the change
                continue
            entries.append((os.path.relpath(full, path), info.st_size, info.st_mtime_ns,
                            os.path.islink(full)))
    return tuple(sorted(entries))


def file_stamp(path: Path | None) -> tuple[str, int, int] | None:
    """Fingerprint of one file (a config), or ``None`` when there is none."""
    if path is None:
        return None
    try:
        info = path.stat()
    except OSError:
        return None
    return (str(path), info.st_size, info.st_mtime_ns)


def check_published(version_dir: Path, *, model_dir: Path, require_marker: bool) -> None:
    """Raise ``NotPublished`` with the reason unless ``version_dir`` may be loaded."""
    check_inside(version_dir, model_dir)
    for item in version_dir.iterdir():
        check_inside(item, model_dir)
    if (version_dir / MANIFEST).exists():
        _check_manifest(version_dir)
    elif require_marker and not (version_dir / MARKER).is_file():
        raise NotPublished(
            f"{version_dir.name}: not published yet: the folder has neither {MANIFEST} nor a "
            f"{MARKER} file; write one of them last (see the publish protocol)")


def check_inside(path: Path, folder: Path) -> None:
    """Refuse ``path`` when it (through a symbolic link) resolves outside ``folder``."""
    if not path.resolve().is_relative_to(folder.resolve()):
        raise NotPublished(f"{path.name}: a symbolic link out of the model folder "
                           f"'{folder.name}'; kiln does not follow links out of a model")


def _check_manifest(version_dir: Path) -> None:
    try:
        manifest = read_manifest(version_dir)
    except InvalidModel as exc:
        raise NotPublished(f"{version_dir.name}/{exc.message}") from None
    if manifest is None or not manifest.files:
        raise NotPublished(f"{version_dir.name}/{MANIFEST}: lists no files")
    for name, entry in manifest.files.items():
        _check_file(version_dir, name, entry.bytes)


def _check_file(version_dir: Path, name: str, size: int | None) -> None:
    where = f"{version_dir.name}/{name}"
    path = version_dir / name
    if Path(name).is_absolute() or ".." in Path(name).parts:
        raise NotPublished(f"{version_dir.name}/{MANIFEST}: file name '{name}' leaves the folder")
    check_inside(path, version_dir)
    if not path.is_file():
        raise NotPublished(f"{where}: listed in {MANIFEST} but missing (not copied yet?)")
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise NotPublished(f"{where}: {actual_size} bytes, {MANIFEST} says {size} "
                           "(still being copied, or a different file)")


class PublishCheck:
    """``check_published`` with memory: a folder's verdict is reused until its files change,
    so a poll does not hash unchanged models again."""

    def __init__(self, *, require_marker: bool) -> None:
        self.require_marker = require_marker
        self._verdicts: dict[Path, tuple[Stamp, str | None]] = {}

    def __call__(self, version_dir: Path, model_dir: Path) -> tuple[Stamp, str | None]:
        """The folder's stamp and why it may not be loaded (``None``: it may)."""
        current = stamp(version_dir)
        cached = self._verdicts.get(version_dir)
        if cached is not None and cached[0] == current:
            return cached
        try:
            check_published(version_dir, model_dir=model_dir, require_marker=self.require_marker)
        except NotPublished as exc:
            verdict: tuple[Stamp, str | None] = (current, exc.message)
        except OSError as exc:  # changed while being checked: the next scan looks again
            verdict = (current, f"{version_dir.name}: cannot be read: {exc.strerror}")
        else:
            verdict = (current, None)
        self._verdicts[version_dir] = verdict
        return verdict
