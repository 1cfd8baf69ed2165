"""Optional OpenTelemetry spans for inference requests: decode → queue → execute → encode.

Off by default. ``kiln serve --trace-exporter console`` (spans as JSON lines on stdout) or
``--trace-exporter otlp`` (OTLP over HTTP, configured by the standard ``OTEL_EXPORTER_OTLP_*``
variables) turns it on; both need ``pip install 'kiln-ml[otel]'``. Spans are made after the
request has finished, from the times its ``RequestRecord`` holds, so tracing adds nothing to
the time a request waits; a caller's W3C ``traceparent`` header becomes the spans' parent.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from kiln.errors import ConfigError
from kiln.serve.observability.requestlog import RequestRecord

_INSTALL = "pip install 'kiln-ml[otel]'"


def build_tracer(exporter: str) -> RequestTracer | None:
    """The tracer for ``exporter`` ('none', 'console' or 'otlp'); None for 'none'."""
    if exporter == "none":
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SimpleSpanProcessor,
        )
    except ImportError:
        raise ConfigError(f"--trace-exporter {exporter} needs OpenTelemetry: {_INSTALL}") from None
    provider = TracerProvider(resource=Resource.create({"service.name": "kiln"}))
    if exporter == "console":
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(
            out=sys.stdout, formatter=lambda span: span.to_json(indent=None) + "\n")))
    elif exporter == "otlp":
        provider.add_span_processor(BatchSpanProcessor(_otlp_exporter()))
    else:
        raise ConfigError(f"unknown trace exporter '{exporter}'; use none, console or otlp")
    return RequestTracer(provider)


def _otlp_exporter() -> Any:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise ConfigError(f"--trace-exporter otlp needs the OTLP exporter: {_INSTALL}") from None
    return OTLPSpanExporter()


class RequestTracer:
    """Turns finished requests' records into one span per phase under a request span."""

    def __init__(self, provider: Any) -> None:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._provider = provider
        self._tracer = provider.get_tracer("kiln.serve")
        self._propagator = TraceContextTextMapPropagator()
        # Records hold monotonic times; spans want times since the epoch.
        self._offset = time.time_ns() - time.monotonic_ns()

    def emit(self, record: RequestRecord, *, request_id: str, status: int | str,
             error: BaseException | None) -> None:
        from opentelemetry import trace

        parent = (self._propagator.extract({"traceparent": record.traceparent})
                  if record.traceparent else None)
        at = self._offset
        root = self._tracer.start_span(
            "infer", context=parent, start_time=record.start + at,
            attributes={"kiln.request_id": request_id, "kiln.model": record.model,
                        "kiln.version": record.version, "kiln.status": str(status)})
        if error is not None:
            root.set_status(trace.Status(trace.StatusCode.ERROR, type(error).__name__))
        context = trace.set_span_in_context(root)
        t = record.timing
        for name, start, end in (("decode", record.start, t.decoded),
                                 ("queue", t.enqueued, t.started),
                                 ("execute", t.started, t.finished),
                                 ("encode", record.encoding, record.end)):
            if start and end:
                span = self._tracer.start_span(name, context=context, start_time=start + at)
                span.end(end_time=end + at)
        root.end(end_time=record.end + at)

    def shutdown(self) -> None:
        """Export what is buffered and stop."""
        self._provider.shutdown()
