# tally-collector: OTLP receiver, auth, rate limits, metering, spool, ClickHouse sink.
# Build from the repository root: docker build -f deploy/docker/collector.Dockerfile -t tally-collector .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p tally-collector --bin tally-collector

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --home-dir /var/lib/tally-collector tally \
    && mkdir -p /var/lib/tally-collector && chown tally /var/lib/tally-collector
COPY --from=build /src/target/release/tally-collector /usr/local/bin/tally-collector
USER 10001
# OTLP gRPC, OTLP HTTP, admin (/metrics, /healthz, /readyz).
EXPOSE 4417 4418 9465
# The spool: acknowledged usage waiting for ClickHouse. Anything not yet written is lost with it.
VOLUME /var/lib/tally-collector
ENTRYPOINT ["/usr/local/bin/tally-collector"]
