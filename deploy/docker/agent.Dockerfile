# tally-agent: OTLP receiver, eBPF usage probes, forwarder with a disk WAL.
# Build from the repository root: docker build -f deploy/docker/agent.Dockerfile -t tally-agent .
FROM rust:1-bookworm AS build
# The eBPF programs are C, compiled by the crate's build script with clang -target bpf against
# libbpf's headers (see ebpf/build.rs); without them the build stops saying so.
RUN apt-get update && apt-get install -y --no-install-recommends clang libbpf-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p tally-agent --bin tally-agent

FROM debian:bookworm-slim
# ca-certificates: collectors behind TLS (https:// in --collector).
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/tally-agent /usr/local/bin/tally-agent
# OTLP gRPC, OTLP HTTP, admin (/metrics, /healthz, /readyz).
EXPOSE 4317 4318 9464
# The WAL lives here; mount a volume (a hostPath in the DaemonSet) so it outlives the container.
VOLUME /var/lib/tally-agent
ENTRYPOINT ["/usr/local/bin/tally-agent"]
