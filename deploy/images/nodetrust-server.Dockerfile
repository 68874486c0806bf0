# nodetrust-server image. Build from the repository root:
#   docker build -f deploy/images/nodetrust-server.Dockerfile -t nodetrust/nodetrust-server:0.1.0 .
#
# Runs as the non-root user 10001 (deploy/server.yaml sets the same UID and fsGroup, so the
# state volume is writable). The server does not link libtss2.

FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config clang cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --locked --release -p nodetrust-server --bin nodetrust-server

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 nodetrust \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/nodetrust --no-create-home nodetrust \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/nodetrust
COPY --from=build /src/target/release/nodetrust-server /usr/local/bin/nodetrust-server
USER 10001:10001
EXPOSE 8443
ENTRYPOINT ["/usr/local/bin/nodetrust-server"]
