# Multi-stage build. The default target (the last stage) is the service, `erasure`, built without
# the simulator (`--no-default-features`: no `erasure demo`, no `erasure sim`); it runs as a
# non-root user. The `sim` target is the aggregator simulator alone (`erasure-sim`), which
# docker-compose.yml runs in place of the aggregator.
FROM rust:1.95-bookworm AS source
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
# The workspace's other crates: the proofs (erasure-proof) and the simulator (erasure-sim).
COPY crates ./crates
# sqlx-core (TCP_NODELAY) and sqlx-postgres (unnamed statements behind a pooler): vendor/README.md.
COPY vendor ./vendor
COPY src ./src
COPY migrations ./migrations
COPY openapi ./openapi
# askama compiles the console's templates into the binary.
COPY templates ./templates

FROM source AS build
RUN cargo build --release --locked --no-default-features --bin erasure

FROM source AS build-sim
RUN cargo build --release --locked -p erasure-sim --bin erasure-sim

FROM debian:bookworm-slim AS sim
RUN useradd --system --uid 10001 --no-create-home erasure
COPY --from=build-sim /src/target/release/erasure-sim /usr/local/bin/erasure-sim
USER erasure
EXPOSE 8090
ENTRYPOINT ["erasure-sim"]

FROM debian:bookworm-slim AS service
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home erasure
COPY --from=build /src/target/release/erasure /usr/local/bin/erasure
USER erasure
EXPOSE 8080
ENTRYPOINT ["erasure"]
CMD ["serve"]
