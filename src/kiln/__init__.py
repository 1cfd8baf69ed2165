"""kiln: take a trained model to production.

The four verbs are ``convert``, ``optimize``, ``serve`` and ``bench``; this package
root exposes the shared nouns every part speaks (see ``kiln.tensors``) and the error root.
"""

from kiln.errors import ErrorKind, KilnError
from kiln.tensors import DataType, Signature, TensorDict, TensorSpec

__version__ = "0.1.0"

__all__ = [
    "DataType",
    "ErrorKind",
    "KilnError",
    "Signature",
    "TensorDict",
    "TensorSpec",
    "__version__",
]
