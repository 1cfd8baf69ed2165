"""Request ids, the per-request log line and (when tracing is on) the request's spans.

Every request gets an id: the caller's ``x-request-id`` header when it is usable, else the
V2 request ``id``, else one made here; HTTP responses carry it back in ``x-request-id``.
Requests are *recorded* (timestamps taken at each phase) only when debug logging is on or a
tracer is set, so with both off a request costs one ``isEnabledFor`` check here.

Log lines are structured: the fields travel in ``extra={"fields": {...}}`` and kiln's
formatters (``kiln.cli.logs``) write them as JSON keys or ``key=value`` pairs. Fields never
hold tensor data, only names, ids, statuses and durations::

    observer = RequestObserver(tracer=None)
    record = observer.begin()          # None unless debug logging or tracing is on
    ...
    observer.finish(record, request_id=rid, protocol="http", method="GET", status=200)
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from kiln.errors import KilnError, kind_of
from kiln.serve.core.statistics import Timing

log = logging.getLogger("kiln.serve.requests")

#: Ids kiln echoes and logs: printable ASCII without spaces, at most 128 characters.
_USABLE_ID = re.compile(r"[\x21-\x7e]{1,128}")
#: Longest error message copied into a log line.
_MAX_MESSAGE = 300


def usable_id(value: str | bytes | None) -> str | None:
    """``value`` as a request id when it is safe to log and echo in a header, else None."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return value if _USABLE_ID.fullmatch(value) else None


class RequestIds:
    """Unique request ids: a random per-process prefix and a counter (cheaper than uuid4)."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(6)
        self._counter = itertools.count(1)

    def new(self) -> str:
        return f"{self._prefix}-{next(self._counter):x}"


@dataclass(slots=True)
class RequestRecord:
    """What one observed request did, as monotonic nanoseconds; 0 = did not happen."""

    start: int
    model: str = ""
    version: str = ""
    #: When encoding the response began.
    encoding: int = 0
    end: int = 0
    timing: Timing = field(default_factory=Timing)
    #: Incoming trace context (W3C ``traceparent``), for the spans' parent.
    traceparent: str | None = None

    def durations_us(self) -> dict[str, float]:
        """Each phase that happened, in microseconds."""
        t = self.timing
        phases = {"decode_us": (self.start, t.decoded), "queue_us": (t.enqueued, t.started),
                  "compute_us": (t.started, t.finished), "encode_us": (self.encoding, self.end),
                  "total_us": (self.start, self.end)}
        return {name: round((b - a) / 1e3, 1) for name, (a, b) in phases.items() if a and b}


class Tracer(Protocol):
    """Turns the records of finished inference requests into spans
    (``kiln.serve.observability.tracing``)."""

    def emit(self, record: RequestRecord, *, request_id: str, status: int | str,
             error: BaseException | None) -> None: ...

    def shutdown(self) -> None: ...


class RequestObserver:
    """Writes the per-request debug line and error lines, and hands records to the tracer."""

    def __init__(self, *, tracer: Tracer | None = None) -> None:
        self.tracer = tracer

    def begin(self) -> RequestRecord | None:
        """A record to fill in, or None when nobody would read it."""
        if self.tracer is None and not log.isEnabledFor(logging.DEBUG):
            return None
        return RequestRecord(time.monotonic_ns())

    def finish(self, record: RequestRecord | None, *, request_id: str, protocol: str,
               method: str, path: str = "", status: int | str,
               error: BaseException | None = None) -> None:
        """Log the request (at debug; a failed one at info) and trace it."""
        if record is None and error is None:
            return
        fields: dict[str, Any] = {"id": request_id, "protocol": protocol, "method": method}
        if path:
            fields["path"] = path
        fields["status"] = status
        if record is not None:
            record.end = record.end or time.monotonic_ns()
            if record.model:
                fields["model"], fields["version"] = record.model, record.version
            fields.update(record.durations_us())
        if error is not None:
            fields["reason"] = kind_of(error).value
            message = error.message if isinstance(error, KilnError) else "internal error"
            fields["error"] = message[:_MAX_MESSAGE]
        # Failures at info (server faults are also logged at error, with the traceback, by
        # the protocol adapter); successes at debug.
        level = logging.DEBUG if error is None else logging.INFO
        if log.isEnabledFor(level):
            log.log(level, "request", extra={"fields": fields})
        if self.tracer is not None and record is not None and record.timing.decoded:
            self.tracer.emit(record, request_id=request_id, status=status, error=error)
