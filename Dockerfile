# ordo: multi-stage build. The tests do not build this image (no container engine runs where
# they run); `docker build -t ordo .` builds it.
FROM rust:1.95-slim-bookworm AS build
# libssl-dev and pkg-config: librdkafka is built with TLS (and with it SASL SCRAM and PLAIN).
RUN apt-get update && apt-get install -y --no-install-recommends build-essential perl cmake \
    libssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY topics ./topics
COPY benches ./benches
RUN cargo build --release --locked --bin ordo

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 ordo && useradd --uid 10001 --gid 10001 --no-create-home ordo
COPY --from=build /src/target/release/ordo /usr/local/bin/ordo
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/ordo"]
CMD ["run"]
