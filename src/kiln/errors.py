"""The error root of kiln.

Every error kiln raises on purpose is a ``KilnError`` carrying a transport-neutral
``ErrorKind``. Each transport maps kinds to its own status codes in exactly one table
(``kiln.serve.protocols``), so domain code never imports a web framework::

    KilnError
     ├── InvalidArgument     bad request data: 400 / INVALID_ARGUMENT
     │    ├── ConfigError     a configuration file or setting is invalid
     │    └── InvalidModel    a model folder or file cannot be served as it is
     ├── NotFound            unknown model, version or tensor: 404 / NOT_FOUND
     ├── Unavailable         not ready, shutting down, timed out: 503 / UNAVAILABLE
     ├── Overloaded          the model's queue is full: 503 + Retry-After / UNAVAILABLE
     ├── ResourceExhausted   a size limit was exceeded: 413 / RESOURCE_EXHAUSTED
     ├── Unauthenticated     missing or invalid credentials: 401 / UNAUTHENTICATED
     ├── PermissionDenied    credentials lack the scope: 403 / PERMISSION_DENIED
     ├── Unimplemented       a feature kiln does not offer: 501 / UNIMPLEMENTED
     └── InternalError       a fault inside kiln or a backend: 500 / INTERNAL
"""

from __future__ import annotations

import enum


class ErrorKind(enum.Enum):
    """What went wrong, independent of the transport that reports it."""

    INVALID_ARGUMENT = "invalid_argument"
    NOT_FOUND = "not_found"
    UNAVAILABLE = "unavailable"
    OVERLOADED = "overloaded"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    UNAUTHENTICATED = "unauthenticated"
    PERMISSION_DENIED = "permission_denied"
    UNIMPLEMENTED = "unimplemented"
    INTERNAL = "internal"


class KilnError(Exception):
    """Root of every error kiln raises deliberately; ``kind`` says how to report it."""

    kind: ErrorKind = ErrorKind.INTERNAL

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: For ``UNAVAILABLE``: a hint for the client's back-off, in seconds.
        self.retry_after_s = retry_after_s


class InvalidArgument(KilnError):
    kind = ErrorKind.INVALID_ARGUMENT


class NotFound(KilnError):
    kind = ErrorKind.NOT_FOUND


class Unavailable(KilnError):
    kind = ErrorKind.UNAVAILABLE


class Overloaded(KilnError):
    """Too much work is waiting; the client should back off (``retry_after_s``)."""

    kind = ErrorKind.OVERLOADED


class ResourceExhausted(KilnError):
    kind = ErrorKind.RESOURCE_EXHAUSTED


class Unauthenticated(KilnError):
    kind = ErrorKind.UNAUTHENTICATED


class PermissionDenied(KilnError):
    kind = ErrorKind.PERMISSION_DENIED


class Unimplemented(KilnError):
    kind = ErrorKind.UNIMPLEMENTED


class InternalError(KilnError):
    kind = ErrorKind.INTERNAL


class ConfigError(InvalidArgument):
    """A configuration file or setting is invalid; the message names the file, field and fix."""


class InvalidModel(InvalidArgument):
    """A model folder or file cannot be served as it is (not ONNX, links out of its folder,
    fails its manifest, cannot be decrypted, ...); the message names the file and why."""


def kind_of(exc: BaseException) -> ErrorKind:
    """How ``exc`` is reported: its kind, or ``INTERNAL`` for anything not raised on purpose."""
    return exc.kind if isinstance(exc, KilnError) else ErrorKind.INTERNAL
