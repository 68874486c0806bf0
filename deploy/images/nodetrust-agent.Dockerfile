# nodetrust-agent image. Build from the repository root:
#   docker build -f deploy/images/nodetrust-agent.Dockerfile -t nodetrust/nodetrust-agent:0.1.0 .
#
# Runs as root: the measured-boot and IMA logs in securityfs are readable by root only
# (0440 root:root), and /dev/tpmrm0 is root:tss 0660. Without the logs, the agent can run as any
# user in the group owning /dev/tpmrm0 on the node (`stat -c %g /dev/tpmrm0`: `tss`, whose GID
# differs between distributions): set the pod's runAsUser to a non-root UID and add that GID to
# supplementalGroups (docs/operations.md).

FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libtss2-dev pkg-config clang cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --locked --release -p nodetrust-agent --bin nodetrust-agent

FROM debian:bookworm-slim
# libtss2 runtime: ESYS, the marshalling and system API, the TCTI loader and the device TCTI it
# loads for `device:/dev/tpmrm0` (tabrmd for `--tcti=tabrmd`).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
      libtss2-esys-3.0.2-0 libtss2-mu0 libtss2-sys1 libtss2-tctildr0 libtss2-tcti-device0 \
      libtss2-tcti-tabrmd0 libtss2-rc0 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/nodetrust-agent /usr/local/bin/nodetrust-agent
EXPOSE 1443
ENTRYPOINT ["/usr/local/bin/nodetrust-agent"]
