"""The logging extension's settings: Triton's names, validation, and the level they set."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import orjson
import pytest

from kiln.errors import InvalidArgument, PermissionDenied
from kiln.serve.observability.logcontrol import LogControl
from kiln.serve.protocols.http import Request
from kiln.serve.protocols.observability_http import logging_routes


@pytest.fixture
def control() -> Iterator[LogControl]:
    yield LogControl(verbose=0, fmt="json", logger="kiln.test_logcontrol")
    logging.getLogger("kiln.test_logcontrol").setLevel(logging.NOTSET)


def test_settings_use_tritons_names_and_report_every_value(control: LogControl) -> None:
    assert control.settings() == {"log_file": "", "log_info": True, "log_warning": True,
                                  "log_error": True, "log_verbose_level": 0,
                                  "log_format": "json"}


@pytest.mark.parametrize(("changes", "level"), [
    ({"log_verbose_level": 2}, logging.DEBUG),
    ({"log_verbose_level": 0}, logging.INFO),
    ({"log_info": False}, logging.WARNING),
    ({"log_info": False, "log_warning": False}, logging.ERROR),
    ({"log_info": False, "log_warning": False, "log_error": False}, logging.CRITICAL + 1),
])
def test_changes_set_the_level_of_the_logger(control: LogControl, changes: dict[str, object],
                                             level: int) -> None:
    settings = control.update(changes)
    assert logging.getLogger("kiln.test_logcontrol").level == level
    assert all(settings[key] == value for key, value in changes.items())


@pytest.mark.parametrize(("changes", "message"), [
    ({"log_file": "/root/.bashrc"}, "'log_file' cannot be changed"),
    ({"log_format": "text"}, "'log_format' cannot be changed"),
    ({"log_verbose_level": -1}, "'log_verbose_level' must be a non-negative integer"),
    ({"log_verbose_level": True}, "'log_verbose_level' must be a non-negative integer"),
    ({"log_info": 1}, "'log_info' must be true or false"),
    ({"log_colour": True}, "unknown logging setting 'log_colour'"),
    ([1, 2], "must be a JSON object"),
])
def test_bad_changes_are_refused_and_change_nothing(control: LogControl, changes: object,
                                                    message: str) -> None:
    before = control.settings()
    with pytest.raises(InvalidArgument, match=message):
        control.update({"log_verbose_level": 1, **changes} if isinstance(changes, dict)
                       else changes)
    assert control.settings() == before


def test_unchanged_fixed_settings_are_accepted(control: LogControl) -> None:
    """Clients that send back every setting they read must not be refused."""
    assert control.update(control.settings())["log_verbose_level"] == 0


@pytest.mark.parametrize(("client", "allowed"), [
    ("127.0.0.1", True), ("::1", True), ("192.0.2.7", False), (None, False),
    ("/run/kiln.sock", False),
])
def test_the_logging_api_answers_loopback_callers_only(control: LogControl, client: str | None,
                                                       allowed: bool) -> None:
    get, post = logging_routes(control)
    request = Request("POST", "/v2/logging", {}, {}, b'{"log_verbose_level": 1}', client=client)
    if allowed:
        assert orjson.loads(asyncio.run(post.handler(request)).body)["log_verbose_level"] == 1
    else:
        with pytest.raises(PermissionDenied, match="loopback"):
            asyncio.run(get.handler(request))
        with pytest.raises(PermissionDenied, match="loopback"):
            asyncio.run(post.handler(request))
        assert control.settings()["log_verbose_level"] == 0
