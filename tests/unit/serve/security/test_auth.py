"""API keys, the scope table and the route-table walk proving no route escapes access control."""

from __future__ import annotations

import asyncio
import os
import string
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import Phase, find, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2

from kiln.errors import ConfigError, PermissionDenied, Unauthenticated
from kiln.serve.app import KilnServer
from kiln.serve.protocols.grpc_auth import GRPC_METHODS
from kiln.serve.protocols.http import Response, Route, route
from kiln.serve.protocols.http_app import HttpApp
from kiln.serve.protocols.v2_grpc import SERVICE
from kiln.serve.security import keys as store
from kiln.serve.security.auth import GROUP_SCOPES, AccessControl, check_exposure
from kiln.serve.settings import ServerSettings
from tests.credentials import make_keys


def test_tokens_are_random_and_only_their_salted_hash_is_stored(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    first, second = make_keys(path, (["infer"], None), (["infer"], None))
    assert first != second
    secret = store.parse_token(first)[1]  # type: ignore[index]
    assert len(secret) == 43  # 256 bits, base64url
    text = path.read_text()
    assert secret not in text and first not in text
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    loaded = store.load_keys(path).keys
    assert loaded[0].matches(secret) and not loaded[1].matches(secret)


@pytest.mark.parametrize(("content", "reason"), [
    ("version: 1\nkeys: [{id: zz}]", "keys.0.id"),
    ("version: 2\nkeys: []", "version"),
    ("version: 1\nkeys: []\nextra: 1", "extra"),
    ("- just a list", "expected a mapping"),
    ("version: 1\nkeys: [{id: 0123456789abcdef, scopes: [root], salt: "
     "00000000000000000000000000000000, sha256: " + "0" * 64 + "}]", "scopes.0"),
    ("{not yaml", "not valid YAML"),
])
def test_a_malformed_keys_file_fails_with_the_reason(tmp_path: Path, content: str,
                                                     reason: str) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="keys file") as info:
        AccessControl(path)
    assert reason in info.value.message


def test_a_keys_file_others_can_write_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    make_keys(path, (["infer"], None))
    path.chmod(0o666)
    with pytest.raises(ConfigError, match="chmod go-w"):
        AccessControl(path)


def test_scopes_models_and_credentials(tmp_path: Path) -> None:
    infer_a, admin, meta = make_keys(tmp_path / "k.yaml", (["infer"], ["a"]), (["admin"], None),
                                     (["metadata"], None))
    access = AccessControl(tmp_path / "k.yaml")
    access.check("infer", f"Bearer {infer_a}", "a")
    access.check("infer", f"bearer  {infer_a} ".encode(), "a")
    access.check("health", None, None)
    for group in ("infer", "metadata", "statistics", "repository", "logging"):
        access.check(group, f"Bearer {admin}", "b")
    with pytest.raises(PermissionDenied, match="may not use model 'b'"):
        access.check("infer", f"Bearer {infer_a}", "b")
    with pytest.raises(PermissionDenied, match="'metadata' scope"):
        access.check("metadata", f"Bearer {infer_a}", "a")
    with pytest.raises(PermissionDenied, match="'admin' scope"):
        access.check("repository", f"Bearer {meta}", None)
    tampered = infer_a[:-1] + ("A" if infer_a[-1] != "A" else "B")
    for bad in (None, infer_a, f"Basic {infer_a}", f"Bearer {tampered}", "Bearer kiln_x_y",
                f"Bearer {infer_a.replace(infer_a[5:21], '0' * 16)}"):
        with pytest.raises(Unauthenticated) as info:
            access.check("infer", bad, "a")
        assert infer_a not in info.value.message


def test_revoking_a_key_takes_effect_without_a_restart(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "k.yaml"
    token, other = make_keys(path, (["infer"], None), (["infer"], None))
    access = AccessControl(path)
    access.check("infer", f"Bearer {token}", None)
    kept = [k for k in store.load_keys(path).keys if not token.startswith(f"kiln_{k.id}")]
    store.save_keys(path, store.KeysFile(keys=kept))
    monkeypatch.setattr("kiln.serve.security.auth.RELOAD_INTERVAL_S", 0.0)
    time.sleep(0.01)
    with pytest.raises(Unauthenticated):
        access.check("infer", f"Bearer {token}", None)
    access.check("infer", f"Bearer {other}", None)
    path.write_text("garbage: [")  # a broken edit keeps the last good keys
    access.check("infer", f"Bearer {other}", None)


def test_http_app_refuses_a_route_group_without_an_access_rule() -> None:
    async def handler(request: object) -> Response:
        return Response()

    with pytest.raises(ConfigError, match=r"backdoor have no entry"):
        HttpApp([route("GET", "/x", handler, group="backdoor")], max_request_bytes=1024,
                access=None)


def _example_path(item: Route, routes: list[Route]) -> str:
    """A concrete path that the router sends to ``item`` (drawn from its pattern)."""
    alphabet = string.ascii_letters + string.digits + "/:_"
    app = HttpApp(routes, max_request_bytes=1024, access=None)
    return find(st.from_regex(item.pattern, fullmatch=True, alphabet=alphabet),
                lambda p: app.router.match(item.method, p)[0] is item,
                settings=settings(database=None, phases=[Phase.generate]))


def test_every_http_route_is_behind_access_control(tmp_path: Path) -> None:
    """Walks whatever routes the server mounts (V2, TF Serving and any added later): each
    group has a rule, and without a key every route but health answers 401."""
    (tmp_path / "repo").mkdir()
    make_keys(tmp_path / "k.yaml", (["admin"], None))
    server = KilnServer(ServerSettings.build(model_repository=[tmp_path / "repo"],
                                             keys_file=tmp_path / "k.yaml"))
    app = server.http_app()
    routes = list(app.router.routes)
    assert len(routes) >= 15 and {r.group for r in routes} <= set(GROUP_SCOPES)

    async def walk() -> dict[str, int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return {f"{r.method} {r.pattern.pattern} ({r.group})": (await client.request(
                r.method, _example_path(r, routes), content=b"{}")).status_code
                for r in routes}

    codes = asyncio.run(walk())
    for name, code in codes.items():
        assert (code != 401) if "(health)" in name else (code == 401), name


def test_every_grpc_method_has_an_access_rule() -> None:
    """Every method of the service definition, implemented or not, maps to a known group."""
    methods = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods
    names = {f"/{SERVICE}/{m.name}" for m in methods}
    assert len(names) >= 20
    assert names <= set(GRPC_METHODS)
    assert {group for group, _ in GRPC_METHODS.values()} <= set(GROUP_SCOPES)


@pytest.mark.parametrize(("host", "refused"), [
    ("127.0.0.1", False), ("::1", False), ("localhost", False), ("127.8.9.10", False),
    ("0.0.0.0", True), ("::", True), ("10.1.2.3", True), ("example.com", True),
])
def test_only_loopback_is_allowed_without_keys(host: str, refused: bool) -> None:
    listeners = [("HTTP", "127.0.0.1", 8000), ("gRPC", host, 8001)]
    if refused:
        with pytest.raises(ConfigError, match=r"--keys-file.*--insecure"):
            check_exposure(listeners, auth=False, insecure=False)
    else:
        check_exposure(listeners, auth=False, insecure=False)
    check_exposure(listeners, auth=True, insecure=False)
    check_exposure(listeners, auth=False, insecure=True)


def test_keys_file_setting_comes_from_the_environment(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KILN_KEYS_FILE", os.fspath(tmp_path / "k.yaml"))
    assert ServerSettings.build().keys_file == tmp_path / "k.yaml"
