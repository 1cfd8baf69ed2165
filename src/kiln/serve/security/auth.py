"""Access control: the one layer every listener (HTTP, gRPC, metrics, ...) asks.

Each route belongs to an API *group*; ``GROUP_SCOPES`` says which key scope a group needs
(``None``: no key at all). A frontend calls ``AccessControl.check(group, authorization,
model)`` before it reads the request body or runs anything::

    access = AccessControl(Path("keys.yaml"))
    access.check("infer", "Bearer kiln_3f9a..._...", model="digits")   # or raises

Failures raise ``Unauthenticated`` (no key, or a key kiln does not know: 401 /
UNAUTHENTICATED) or ``PermissionDenied`` (a valid key without the scope or the model: 403 /
PERMISSION_DENIED). Messages never contain the key. Keys come only from the
``Authorization: Bearer`` header (gRPC: ``authorization`` metadata), never from a query
string. The keys file is re-read when it changes, so ``kiln keys revoke`` takes effect
within a second without a restart.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from kiln.errors import ConfigError, KilnError, PermissionDenied, Unauthenticated
from kiln.serve.security.keys import KeyRecord, load_keys, parse_token

log = logging.getLogger("kiln.serve.security.auth")

#: API group -> scope a key needs for it (``None``: open to every caller). Every route of
#: every frontend names a group; a group missing here is refused when a frontend is built.
GROUP_SCOPES: dict[str, str | None] = {
    "health": None,
    "metadata": "metadata",
    "infer": "infer",
    "statistics": "metrics",
    "metrics": "metrics",
    "repository": "admin",
    "logging": "admin",
    "trace": "admin",
    "shared_memory": "admin",
}

#: How often, at most, the keys file is checked for changes, in seconds.
RELOAD_INTERVAL_S = 1.0


def check_groups(groups: Iterable[str], where: str) -> None:
    """Refuse to build a frontend whose routes name a group the table does not know."""
    unknown = sorted(set(groups) - set(GROUP_SCOPES))
    if unknown:
        raise ConfigError(f"{where}: API group(s) {', '.join(unknown)} have no entry in "
                          "kiln.serve.security.auth.GROUP_SCOPES; add one so access control "
                          "covers them")


class AccessControl:
    """API keys from a keys file, checked per request."""

    def __init__(self, keys_file: Path) -> None:
        self.keys_file = keys_file
        self._keys = {k.id: k for k in load_keys(keys_file).keys}
        self._stamp = _stamp(keys_file)
        self._checked = time.monotonic()
        self._lock = threading.Lock()

    def check(self, group: str, authorization: str | bytes | None, model: str | None) -> None:
        """Raise unless ``authorization`` may call a route of ``group`` (for ``model``)."""
        record = self.authorize(group, authorization)
        if record is not None and model is not None:
            check_model(record, model)

    def authorize(self, group: str, authorization: str | bytes | None) -> KeyRecord | None:
        """The key allowed to call ``group`` (``None`` when the group is open), or raise."""
        scope = GROUP_SCOPES[group]
        if scope is None:
            return None
        record = self.authenticate(authorization)
        if not record.allows(scope):
            raise PermissionDenied(f"key {record.id} lacks the '{scope}' scope")
        return record

    def authenticate(self, authorization: str | bytes | None) -> KeyRecord:
        """The key record ``authorization`` (``Bearer <token>``) proves, or ``Unauthenticated``."""
        self._maybe_reload()
        if authorization is None:
            raise Unauthenticated("this endpoint needs an API key: send 'Authorization: "
                                  "Bearer <key>' (create keys with 'kiln keys create')")
        if isinstance(authorization, bytes):
            authorization = authorization.decode("latin-1")
        scheme, _, token = authorization.strip().partition(" ")
        parsed = parse_token(token.strip()) if scheme.lower() == "bearer" else None
        record = self._keys.get(parsed[0]) if parsed else None
        if parsed is None or record is None or not record.matches(parsed[1]):
            raise Unauthenticated("invalid API key")
        return record

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._checked < RELOAD_INTERVAL_S or not self._lock.acquire(blocking=False):
            return
        try:
            self._checked = now
            stamp = _stamp(self.keys_file)
            if stamp == self._stamp:
                return
            self._stamp = stamp
            try:
                self._keys = {k.id: k for k in load_keys(self.keys_file).keys}
                log.info("keys file %s reloaded: %d key(s)", self.keys_file, len(self._keys))
            except KilnError as exc:  # keep serving with the keys last read
                log.error("keys file changed but cannot be used (keeping the previous keys): "
                          "%s", exc.message)
        finally:
            self._lock.release()


def check_model(record: KeyRecord, model: str) -> None:
    """Raise unless ``record`` may name ``model``."""
    if record.models is not None and model not in record.models:
        raise PermissionDenied(f"key {record.id} may not use model '{model[:64]}'")


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size, info.st_ino


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(listeners: Iterable[tuple[str, str, int]], *, auth: bool,
                   insecure: bool) -> None:
    """Refuse to listen beyond loopback without API keys, unless told ``insecure``.

    ``listeners`` holds (name, address, port) of every enabled listener."""
    if auth or insecure:
        return
    for name, host, port in listeners:
        if not is_loopback(host):
            raise ConfigError(
                f"refusing to serve {name} on {host}:{port} without access control: anyone "
                "who can reach it could use every model. Create a key with 'kiln keys create "
                "--keys-file keys.yaml --scope infer' and start with '--keys-file keys.yaml' "
                "(add --tls-cert-file/--tls-key-file for TLS), or pass '--insecure' to serve "
                "without authentication"
            )
