"""What the SDK senders share: the OTLP exporters of a protocol, and an exporter wrapper that
records whether each export succeeded (the SDK itself only logs failures)."""


class Recording:
    """Wraps an SDK exporter and records whether each export succeeded."""

    def __init__(self, inner):
        self.inner, self.results = inner, []

    def export(self, batch):
        result = self.inner.export(batch)
        self.results.append(result.name == "SUCCESS")
        return result

    def force_flush(self, timeout_millis=30000):
        return True

    def shutdown(self):
        self.inner.shutdown()


def exporters(protocol, endpoint, headers, gzip=False):
    """The span, metric and log exporters for `protocol` (http or grpc) at `endpoint`."""
    if protocol == "http":
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        c = Compression.Gzip if gzip else Compression.NoCompression
        return (OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces", headers=headers, compression=c),
                OTLPMetricExporter(endpoint=f"{endpoint}/v1/metrics", headers=headers, compression=c),
                OTLPLogExporter(endpoint=f"{endpoint}/v1/logs", headers=headers, compression=c))
    from grpc import Compression
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    c = Compression.Gzip if gzip else Compression.NoCompression
    kw = dict(endpoint=endpoint, insecure=True, headers=headers, compression=c)
    return OTLPSpanExporter(**kw), OTLPMetricExporter(**kw), OTLPLogExporter(**kw)
