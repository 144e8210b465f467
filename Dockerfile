# weir in a container: `docker build -t weir .` (docker-compose.yml builds it).
# Stage 1 compiles weir (bundled RocksDB and librdkafka: clang/libclang for
# bindgen, cmake and a C++ compiler, libssl-dev for librdkafka's TLS and
# SASL and the sink's Postgres TLS; ~20 min on 2 cores the first time).
# Stage 2 is the binary on a slim Debian with the shipped topologies.
FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang libclang-dev cmake make g++ pkg-config libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY data data
COPY benches benches
COPY tests tests
RUN cargo build --release --locked --bin weir \
 && strip target/release/weir

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libstdc++6 libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /var/lib/weir --create-home weir
COPY --from=build /src/target/release/weir /usr/local/bin/weir
COPY topology /etc/weir/topology
USER weir
WORKDIR /var/lib/weir
# --metrics-addr serves /metrics, /healthz and /readyz here.
EXPOSE 9464
ENTRYPOINT ["weir"]
CMD ["--help"]
