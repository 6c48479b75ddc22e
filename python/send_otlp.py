#!/usr/bin/env python3
"""Sends a known workload with the official OpenTelemetry Python SDK and its OTLP exporters.

Used by the tests (and the quickstart) to drive Tally's receivers with a real client:
  send_otlp.py --endpoint http://127.0.0.1:4318 --protocol http --spans 100 --metric-points 10 \
      --logs 5 --tenant acme --key KEY [--gzip] [--service checkout] [--failed-requests 2] \
      [--gate 500:/tmp/go ...]
Every fourth span is a SERVER span (a request); with --failed-requests N the first N of them fail
(status ERROR, http.response.status_code 500), which the collector's SLA aggregates count as errors.
Prints one JSON line with what the SDK reported: {"spans": ..., "spans_ok": true, ...}.
"""
import argparse
import json
import logging
import os
import sys
import time

from opentelemetry._logs import LogRecord
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from otlp_exporters import Recording, exporters


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--protocol", choices=["http", "grpc"], default="http")
    p.add_argument("--spans", type=int, default=0)
    p.add_argument("--spans-per-export", type=int, default=100)
    p.add_argument("--metric-points", type=int, default=0)
    p.add_argument("--logs", type=int, default=0)
    p.add_argument("--tenant")
    p.add_argument("--key")
    p.add_argument("--service", default="checkout")
    p.add_argument("--gzip", action="store_true")
    p.add_argument("--failed-requests", type=int, default=0, metavar="N")
    # A test that injects faults mid-stream pauses the app at known points: after N spans the
    # sender exports everything it holds, then waits for PATH to exist before it goes on.
    p.add_argument("--gate", action="append", default=[], type=gate, metavar="N:PATH")
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    attrs = {"service.name": a.service}
    if a.tenant:
        attrs["tenant.id"] = a.tenant
    resource = Resource.create(attrs)
    headers = {"authorization": f"Bearer {a.key}"} if a.key else {}
    span_exp, metric_exp, log_exp = exporters(a.protocol, a.endpoint, headers, a.gzip)
    report = {}

    if a.spans:
        rec = Recording(span_exp)
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(rec, max_export_batch_size=a.spans_per_export,
                                                       max_queue_size=max(2048, a.spans)))
        tracer = provider.get_tracer("tally-test")
        gates = dict(a.gate)
        for i in range(a.spans):
            if i in gates:
                provider.force_flush()
                wait_for(gates[i])
            # Every fourth span is a SERVER span: a metered request.
            kind = SpanKind.SERVER if i % 4 == 0 else SpanKind.INTERNAL
            with tracer.start_as_current_span(f"op-{i % 7}", kind=kind) as span:
                span.set_attribute("http.route", f"/r/{i % 3}")
                if kind == SpanKind.SERVER and i // 4 < a.failed_requests:
                    span.set_attribute("http.response.status_code", 500)
                    span.set_status(Status(StatusCode.ERROR, "failed"))
        provider.shutdown()
        report["spans"] = a.spans
        if a.failed_requests:
            report["failed_requests"] = min(a.failed_requests, (a.spans + 3) // 4)
        report["spans_ok"] = bool(rec.results) and all(rec.results)

    if a.metric_points:
        reader = InMemoryMetricReader()
        mp = MeterProvider(resource=resource, metric_readers=[reader])
        counter = mp.get_meter("tally-test").create_counter("requests")
        # One counter with N distinct attribute sets: exactly N data points.
        for i in range(a.metric_points):
            counter.add(1, {"i": i})
        report["metric_points"] = a.metric_points
        report["metric_points_ok"] = metric_exp.export(reader.get_metrics_data()) == MetricExportResult.SUCCESS
        metric_exp.shutdown()

    if a.logs:
        rec = Recording(log_exp)
        lp = LoggerProvider(resource=resource)
        lp.add_log_record_processor(BatchLogRecordProcessor(rec, max_queue_size=max(2048, a.logs)))
        logger = lp.get_logger("tally-test")
        for i in range(a.logs):
            logger.emit(LogRecord(body=f"log {i}"))
        lp.shutdown()
        report["logs"] = a.logs
        report["logs_ok"] = bool(rec.results) and all(rec.results)

    print(json.dumps(report))
    return 0


def gate(text):
    n, _, path = text.partition(":")
    if not n.isdigit() or not path:
        raise argparse.ArgumentTypeError(f"want N:PATH, got {text!r}")
    return int(n), path


def wait_for(path, timeout_s=600):
    deadline = time.monotonic() + timeout_s
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            sys.exit(f"gate {path} was not opened within {timeout_s} s")
        time.sleep(0.02)


if __name__ == "__main__":
    sys.exit(main())
