"""The model repository on disk, in Triton's layout::

    repo/<model>/[config.yaml | config.pbtxt]
    repo/<model>/<version>/model.onnx      (version: a positive integer, no leading zero)

``ModelRepository`` only lists and finds; loading is the registry's job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from kiln.errors import ConfigError, InvalidArgument, NotFound
from kiln.repository.config import ModelConfig, load_yaml_config
from kiln.repository.files import ArtifactPolicy, VersionFolder
from kiln.repository.pbtxt import load_pbtxt_config

#: Model names kiln accepts: they name a folder, so no separators, no leading dot.
MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")
_VERSION_DIR = re.compile(r"[1-9][0-9]{0,17}")


def check_model_name(name: str) -> str:
    """Refuse names that could leave the repository (``..``, separators, absolute paths)."""
    if not MODEL_NAME.fullmatch(name) or ".." in name:
        raise InvalidArgument(
            f"invalid model name '{name[:80]}': use letters, digits, '_', '-' and '.', "
            "starting with a letter, digit or '_'"
        )
    return name


@dataclass(frozen=True, slots=True)
class ModelSource:
    """One model folder: its config (explicit or empty) and the versions on disk."""

    name: str
    path: Path
    config: ModelConfig
    config_path: Path | None
    versions: tuple[int, ...]
    #: How this model's files are admitted (manifest, decryption, ONNX checks).
    policy: ArtifactPolicy = field(default=ArtifactPolicy(), compare=False, repr=False)

    def version_path(self, version: int) -> Path:
        return self.path / str(version)

    def files(self, version: int) -> VersionFolder:
        """The version's folder, whose files are read under the repository's policy."""
        return VersionFolder(self.version_path(version), binding=f"{self.name}/{version}",
                             policy=self.policy)


class ModelRepository:
    """Lists and finds models under one or more repository folders."""

    def __init__(self, roots: list[Path], *, policy: ArtifactPolicy | None = None) -> None:
        self.roots = [root.resolve() for root in roots]
        self.policy = policy or ArtifactPolicy()
        for root in self.roots:
            if not root.is_dir():
                raise ConfigError(f"model repository '{root}' is not a directory")

    def list(self) -> list[str]:
        names: dict[str, Path] = {}
        for root in self.roots:
            for child in sorted(root.iterdir()):
                if child.is_dir() and MODEL_NAME.fullmatch(child.name) and ".." not in child.name:
                    if child.name in names:
                        raise ConfigError(
                            f"model '{child.name}' is in two repositories: "
                            f"{names[child.name]} and {child}; rename one"
                        )
                    names[child.name] = child
        return sorted(names)

    def find(self, name: str) -> ModelSource:
        check_model_name(name)
        for root in self.roots:
            path = root / name
            if path.is_symlink():
                raise InvalidArgument(
                    f"model '{name}' is a symbolic link; kiln serves only folders that are "
                    "really inside the model repository (copy or move the model there)")
            if path.is_dir():
                return _read_source(name, path, self.policy)
        raise NotFound(f"model '{name}' is not in the model repository")


def _read_source(name: str, path: Path, policy: ArtifactPolicy) -> ModelSource:
    yaml_path, pbtxt_path = path / "config.yaml", path / "config.pbtxt"
    if yaml_path.exists() and pbtxt_path.exists():
        raise ConfigError(f"{path}: has both config.yaml and config.pbtxt; keep one")
    config_path: Path | None = None
    config = ModelConfig()
    if yaml_path.exists():
        config_path, config = yaml_path, load_yaml_config(yaml_path)
    elif pbtxt_path.exists():
        config_path, config = pbtxt_path, load_pbtxt_config(pbtxt_path)
    if config.name is not None and config.name != name:
        raise ConfigError(
            f"{config_path}: field 'name' is '{config.name}' but the folder is '{name}'; "
            "make them equal or remove the field"
        )
    versions = sorted(int(p.name) for p in path.iterdir()
                      if p.is_dir() and _VERSION_DIR.fullmatch(p.name))
    return ModelSource(name=name, path=path, config=config, config_path=config_path,
                       versions=tuple(versions), policy=policy)
