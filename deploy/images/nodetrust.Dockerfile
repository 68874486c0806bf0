# nodetrust (the operator CLI) image. Build from the repository root:
#   docker build -f deploy/images/nodetrust.Dockerfile -t nodetrust/nodetrust:0.1.0 .
# e.g. kubectl -n kubx-cit run nodetrust --rm -it --image nodetrust/nodetrust:0.1.0 -- doctor
#
# Runs as the non-root user 10001. The CLI does not link libtss2.

FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config clang cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --locked --release -p nodetrust-cli --bin nodetrust

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 nodetrust \
 && useradd --system --uid 10001 --gid 10001 --no-create-home nodetrust
COPY --from=build /src/target/release/nodetrust /usr/local/bin/nodetrust
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/nodetrust"]
