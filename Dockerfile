# Multi-stage build of the `erasure` binary; runs as a non-root user.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
# sqlx-core with TCP_NODELAY (vendor/README.md), patched in by Cargo.toml.
COPY vendor ./vendor
COPY src ./src
COPY migrations ./migrations
COPY openapi ./openapi
# askama compiles the console's templates into the binary.
COPY templates ./templates
RUN cargo build --release --locked --bin erasure

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home erasure
COPY --from=build /src/target/release/erasure /usr/local/bin/erasure
USER erasure
EXPOSE 8080
ENTRYPOINT ["erasure"]
CMD ["serve"]
