#!/usr/bin/env python3
"""Sends LLM-call spans for custom meters with the official OpenTelemetry Python SDK.

Used by collector/tests/custom_meters.rs:
  send_custom.py --endpoint http://127.0.0.1:4318 --protocol http --tenant acme --spans 120 [--key KEY]
Span i (0-based) carries, as span attributes:
  model       = ["gpt-4o", "gpt-4o-mini", "o3"][i % 3]
  llm.vendor  = "anthropic" if i % 5 == 4 else "openai"
  user.id     = f"user-{i % 17}"
  llm.tokens  = absent              if i % 8 == 7
                the string f"{i}.5" if i % 6 == 3
                the int 10 * i + 1  if i is even
                the double i + 0.25 otherwise
Prints one JSON line: {"spans": N, "spans_ok": true}.
"""
import argparse
import json
import logging
import sys

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from otlp_exporters import Recording, exporters

MODELS = ["gpt-4o", "gpt-4o-mini", "o3"]


def tokens(i):
    if i % 8 == 7:
        return None
    if i % 6 == 3:
        return f"{i}.5"
    if i % 2 == 0:
        return 10 * i + 1
    return i + 0.25


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--protocol", choices=["http", "grpc"], default="http")
    p.add_argument("--spans", type=int, default=120)
    p.add_argument("--spans-per-export", type=int, default=50)
    p.add_argument("--tenant", required=True)
    p.add_argument("--key")
    p.add_argument("--service", default="chat")
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    resource = Resource.create({"service.name": a.service, "tenant.id": a.tenant})
    headers = {"authorization": f"Bearer {a.key}"} if a.key else {}
    rec = Recording(exporters(a.protocol, a.endpoint, headers)[0])
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(rec, max_export_batch_size=a.spans_per_export,
                                                   max_queue_size=max(2048, a.spans)))
    tracer = provider.get_tracer("tally-custom-test")
    for i in range(a.spans):
        with tracer.start_as_current_span(f"llm-call-{i}") as span:
            span.set_attribute("model", MODELS[i % 3])
            span.set_attribute("llm.vendor", "anthropic" if i % 5 == 4 else "openai")
            span.set_attribute("user.id", f"user-{i % 17}")
            t = tokens(i)
            if t is not None:
                span.set_attribute("llm.tokens", t)
    provider.shutdown()
    print(json.dumps({"spans": a.spans, "spans_ok": bool(rec.results) and all(rec.results)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
