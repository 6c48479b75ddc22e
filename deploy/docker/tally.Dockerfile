# tally: migrate, serve (the billing API), invoice, and the monthly seal and reports.
# Build from the repository root: docker build -f deploy/docker/tally.Dockerfile -t tally .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p tally-billing --bin tally

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 tally
COPY --from=build /src/target/release/tally /usr/local/bin/tally
USER 10001
EXPOSE 8088
ENTRYPOINT ["/usr/local/bin/tally"]
CMD ["serve"]
