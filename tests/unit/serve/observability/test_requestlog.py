"""Request ids, the per-request record, and the formatters that write structured fields."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import orjson
import pytest

from kiln.cli.logs import JsonFormatter, TextFormatter
from kiln.serve.observability.requestlog import (
    RequestIds,
    RequestObserver,
    RequestRecord,
    usable_id,
)


@pytest.mark.parametrize(("value", "expected"), [
    ("abc-123", "abc-123"), (b"trace/42:x", "trace/42:x"), ("x" * 128, "x" * 128),
    ("x" * 129, None), ("has space", None), ("new\nline", None), ("", None), (None, None),
    ("caf\u00e9", None),
])
def test_usable_ids_are_short_printable_ascii(value: str | bytes | None,
                                              expected: str | None) -> None:
    assert usable_id(value) == expected


def test_generated_ids_are_unique_and_usable() -> None:
    ids = [RequestIds().new() for _ in range(3)] + [RequestIds().new()]
    one = RequestIds()
    ids += [one.new() for _ in range(1000)]
    assert len(set(ids)) == len(ids)
    assert all(usable_id(i) == i for i in ids)


@pytest.fixture
def requests_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("kiln.serve.requests")
    yield logger
    logger.setLevel(logging.NOTSET)


def test_nothing_is_recorded_unless_debug_logging_or_tracing_is_on(
        requests_logger: logging.Logger) -> None:
    observer = RequestObserver()
    requests_logger.setLevel(logging.INFO)
    assert observer.begin() is None
    requests_logger.setLevel(logging.DEBUG)
    assert isinstance(observer.begin(), RequestRecord)


def test_durations_cover_the_phases_that_happened() -> None:
    record = RequestRecord(start=1_000, encoding=9_000, end=10_000)
    timing = record.timing
    timing.decoded, timing.enqueued, timing.started, timing.finished = 3_000, 3_500, 4_000, 8_000
    assert record.durations_us() == {"decode_us": 2.0, "queue_us": 0.5, "compute_us": 4.0,
                                     "encode_us": 1.0, "total_us": 9.0}
    assert RequestRecord(start=1_000, end=2_000).durations_us() == {"total_us": 1.0}


def _record(fields: dict[str, object]) -> logging.LogRecord:
    record = logging.LogRecord("kiln.serve.requests", logging.DEBUG, __file__, 1, "request",
                               None, None)
    record.fields = fields
    return record


def test_json_lines_carry_the_fields_as_keys() -> None:
    line = orjson.loads(JsonFormatter().format(_record({"id": "a1", "status": 200})))
    assert (line["msg"], line["id"], line["status"], line["level"]) == \
        ("request", "a1", 200, "debug")


def test_text_lines_carry_the_fields_as_logfmt_pairs() -> None:
    line = TextFormatter().format(_record({"id": "a1", "error": 'bad "x" = y', "n": 1.5}))
    assert line.endswith('request id=a1 error="bad \\"x\\" = y" n=1.5')
