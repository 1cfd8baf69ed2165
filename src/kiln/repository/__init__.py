"""The model repository on disk: the contract between producers (``kiln convert``,
``kiln optimize``) and the server.

Layout (``layout``), configs (``config``, ``pbtxt``, ``autocomplete``), manifests
(``manifest``), the publish protocol (``publish`` for readers, ``write`` for writers),
reading files safely (``files``), encryption at rest (``encryption``, ``model_keys``).
"""

from kiln.repository.config import ModelConfig, load_yaml_config
from kiln.repository.layout import ModelRepository, ModelSource

__all__ = ["ModelConfig", "ModelRepository", "ModelSource", "load_yaml_config"]
