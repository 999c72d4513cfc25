# syntax=docker/dockerfile:1
# Presence in a container: built in a Rust image, run from a small Debian one as a non-root user,
# with its data (the SQLite database and the endpoint key) in the /var/lib/presence volume.
#
#   docker build -t presence .
#   docker run -p 8080:8080 -v presence-data:/var/lib/presence presence
#
# Every setting is an environment variable (PRESENCE_<KEY>) or a flag after `serve`.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
COPY templates ./templates
COPY assets ./assets
COPY presence.sample.toml README.md ./
RUN cargo build --release --locked --bin presence \
    && strip target/release/presence

FROM debian:bookworm-slim
# CA certificates for the identity provider, webhooks over https and TLS to PostgreSQL/NATS.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/presence --shell /usr/sbin/nologin presence \
    && mkdir -p /var/lib/presence \
    && chown presence:presence /var/lib/presence \
    && chmod 0700 /var/lib/presence
COPY --from=build /src/target/release/presence /usr/local/bin/presence
USER 10001:10001
ENV PRESENCE_LISTEN=0.0.0.0:8080 \
    PRESENCE_DATA_DIR=/var/lib/presence \
    PRESENCE_LOG_FORMAT=json
VOLUME ["/var/lib/presence"]
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/presence"]
CMD ["serve"]
