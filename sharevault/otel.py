"""OpenTelemetry tracing when its packages are installed (the `otel` extra), a no-op otherwise."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

try:
    from opentelemetry import propagate, trace
except ImportError:  # the optional `otel` extra is not installed
    propagate = None  # type: ignore[assignment]
    trace = None  # type: ignore[assignment]

TRACER_NAME = "sharevault"


def configure(service_name: str) -> bool:
    """Install an SDK tracer provider exporting over OTLP (endpoint from the OTEL_* variables)."""
    if trace is None:
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        return False
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return True


@contextlib.contextmanager
def span(name: str, carrier: Mapping[str, Any] | None = None, **attributes: str) -> Iterator[None]:
    """A span named `name`, child of the trace context in `carrier` (HTTP or message headers)."""
    # Without an SDK provider the span records nothing, yet extracting the caller's context and
    # starting a no-op span cost a twentieth of the gateway's CPU per request.
    if trace is None or propagate is None or not active():
        yield
        return
    context = propagate.extract(_text_headers(carrier)) if carrier is not None else None
    tracer = trace.get_tracer(TRACER_NAME)
    with tracer.start_as_current_span(name, context=context, attributes=attributes):
        yield


def active() -> bool:
    """True once an SDK tracer provider is installed (per-message spans cost only then)."""
    return trace is not None and not isinstance(
        trace.get_tracer_provider(), trace.ProxyTracerProvider | trace.NoOpTracerProvider
    )


def inject(headers: dict[str, Any]) -> dict[str, Any]:
    """Add the current trace context (traceparent, tracestate) to outgoing message headers."""
    if propagate is not None:
        propagate.inject(headers)
    return headers


def _text_headers(carrier: Mapping[str, Any]) -> dict[str, str]:
    # AMQP headers may hold bytes; the propagator reads text, by lower-case name.
    out: dict[str, str] = {}
    for key, value in carrier.items():
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        if isinstance(value, str):
            out[key.lower()] = value
    return out
