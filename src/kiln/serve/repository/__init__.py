"""Finding models on disk: the Triton-style layout, their configs, and config inference."""

from kiln.serve.repository.config import ModelConfig, load_yaml_config
from kiln.serve.repository.layout import ModelRepository, ModelSource

__all__ = ["ModelConfig", "ModelRepository", "ModelSource", "load_yaml_config"]
