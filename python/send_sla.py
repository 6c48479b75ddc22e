#!/usr/bin/env python3
"""Sends SERVER spans of known latencies and outcomes with the official OpenTelemetry Python SDK.

Drives Tally's SLA extraction with a real client:
  send_sla.py --endpoint http://127.0.0.1:4318 --protocol http --tenant acme [--key KEY]
Every span gets explicit start and end times (ns), so latencies are exact. Failures come in every
form the collector must recognise: status ERROR, http.response.status_code 5xx (int), the old
http.status_code as a string, and both keys at once (OTEL_SEMCONV_STABILITY_OPT_IN=http/dup).
Spans that are not requests (INTERNAL, CLIENT) are sent too and must be ignored.
Prints one JSON line: {"ok": true, "requests": [{"route", "latency_ns", "error", "trace_id"}, ...]}.
"""
import argparse
import json
import logging
import sys
import time

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from otlp_exporters import Recording, exporters


def plan():
    """(kind, route or None, latency_ns, attributes, status ERROR?, counts as an error?)"""
    ms = 1_000_000
    out = []
    for i in range(200):
        out.append((SpanKind.SERVER, "/pay", (i + 1) * 5 * ms, {}, i % 10 == 9, i % 10 == 9))
    for i in range(100):
        attrs, err = {"http.response.status_code": 200}, False
        if i % 20 == 0:
            attrs, err = {"http.response.status_code": 503}, True
        elif i % 20 == 5:
            attrs, err = {"http.response.status_code": 500, "http.status_code": 500}, True
        elif i % 20 == 10:
            attrs, err = {"http.status_code": "502"}, True
        elif i % 20 == 15:
            attrs = {"http.response.status_code": 404}
        elif i % 20 == 17:
            # Both keys and an ERROR status: still one failed request.
            out.append((SpanKind.SERVER, "/users/{id}", (i + 1) * 2 * ms,
                        {"http.response.status_code": 504, "http.status_code": 504}, True, True))
            continue
        out.append((SpanKind.SERVER, "/users/{id}", (i + 1) * 2 * ms, attrs, False, err))
    for i in range(5):
        out.append((SpanKind.CONSUMER, None, (i + 1) * 7 * ms, {}, False, False))
    for i in range(3):
        out.append((SpanKind.INTERNAL, "/pay", 3000 * ms, {}, True, None))
        out.append((SpanKind.CLIENT, "/pay", 4000 * ms, {"http.response.status_code": 503}, True, None))
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--protocol", choices=["http", "grpc"], default="http")
    p.add_argument("--tenant", required=True)
    p.add_argument("--service", default="checkout")
    p.add_argument("--key")
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    resource = Resource.create({"service.name": a.service, "tenant.id": a.tenant})
    headers = {"authorization": f"Bearer {a.key}"} if a.key else {}
    rec = Recording(exporters(a.protocol, a.endpoint, headers)[0])
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(rec, max_export_batch_size=512, max_queue_size=4096))
    tracer = provider.get_tracer("tally-sla-test")
    base = time.time_ns() - 3_600 * 1_000_000_000
    sent = []
    for n, (kind, route, latency, attrs, status_error, counts) in enumerate(plan()):
        start = base + n * 1_000_000
        attributes = dict(attrs)
        if route is not None:
            attributes["http.route"] = route
        # No parent: every span is the root of its own trace.
        span = tracer.start_span(f"op {route}", kind=kind, start_time=start, attributes=attributes)
        if status_error:
            span.set_status(Status(StatusCode.ERROR, "failed"))
        span.end(end_time=start + latency)
        if counts is not None:
            sent.append({"route": route or "", "latency_ns": latency, "error": counts,
                         "trace_id": format(span.get_span_context().trace_id, "032x")})
    provider.shutdown()
    print(json.dumps({"ok": bool(rec.results) and all(rec.results), "requests": sent}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
