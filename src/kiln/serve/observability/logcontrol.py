"""kiln's log level, readable and changeable while the server runs (Triton's logging extension).

The settings use Triton's names (``log_info``, ``log_warning``, ``log_error``,
``log_verbose_level``, ``log_file``, ``log_format``); a change sets the level of the ``kiln``
logger, which every kiln logger inherits. The log file and format are fixed at start: a
runtime API that takes a path is how CVE-2024-0087 turned Triton's logging endpoint into a
file write, so kiln offers no such thing::

    control = LogControl(verbose=0, fmt="json")
    control.update({"log_verbose_level": 1})   # debug lines from now on
"""

from __future__ import annotations

import logging
from typing import Any

from kiln.errors import InvalidArgument

#: Settings a caller may change, with the type each takes.
_CHANGEABLE: dict[str, type] = {"log_info": bool, "log_warning": bool, "log_error": bool,
                                "log_verbose_level": int}
#: Settings fixed when kiln starts, with what to do instead.
_FIXED = {"log_file": "kiln logs to stderr; redirect it when starting the server",
          "log_format": "the format is chosen when the server starts (--log-format)"}


class LogControl:
    """Holds the logging extension's settings and applies them to the ``kiln`` logger."""

    def __init__(self, *, verbose: int, fmt: str, logger: str = "kiln") -> None:
        self._logger = logging.getLogger(logger)
        self._format = fmt
        self._values: dict[str, Any] = {"log_info": True, "log_warning": True,
                                        "log_error": True, "log_verbose_level": verbose}

    def settings(self) -> dict[str, Any]:
        """Every setting with its current value (Triton answers all of them, always)."""
        return {"log_file": "", **self._values, "log_format": self._format}

    def update(self, changes: Any) -> dict[str, Any]:
        """Apply ``changes`` (all or nothing) and return every setting."""
        if not isinstance(changes, dict):
            raise InvalidArgument("logging settings must be a JSON object of setting names")
        for key, value in changes.items():
            _check(key, value, self.settings())
        self._values.update(changes)
        self._logger.setLevel(self.level())
        return self.settings()

    def level(self) -> int:
        """The ``logging`` level the settings amount to."""
        v = self._values
        if v["log_verbose_level"] > 0:
            return logging.DEBUG
        for key, level in (("log_info", logging.INFO), ("log_warning", logging.WARNING),
                           ("log_error", logging.ERROR)):
            if v[key]:
                return level
        return logging.CRITICAL + 1


def _check(key: str, value: Any, current: dict[str, Any]) -> None:
    if key in _FIXED:
        if value != current[key]:
            raise InvalidArgument(f"logging setting '{key}' cannot be changed: {_FIXED[key]}")
        return
    expected = _CHANGEABLE.get(key)
    if expected is None:
        raise InvalidArgument(
            f"unknown logging setting '{key[:64]}'; known: {', '.join(current)}")
    # bool is a subclass of int: tell them apart, so {"log_verbose_level": true} is refused.
    if type(value) is not expected or (isinstance(value, int) and value < 0):
        kind = "true or false" if expected is bool else "a non-negative integer"
        raise InvalidArgument(f"logging setting '{key}' must be {kind}")
