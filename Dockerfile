# The scratch image built from a clean clone, no `make static` first:
#   docker build -t msgtrace .        (or podman build / buildah bud)
# The builder stage needs Docker Hub (rust:alpine), Alpine's package mirror and
# crates.io. Without them, use the prebuilt path that `make image` and the tests take:
#   make static && docker build -f Dockerfile.scratch -t msgtrace .
# Below the builder stage this file is Dockerfile.scratch line for line
# (tests/it/deploy.rs holds them together).

# rust:alpine targets musl natively: the release profile of Cargo.toml gives the same
# stripped static binary as `make static`, for the builder's own architecture.
FROM docker.io/library/rust:1-alpine AS build
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin msgtrace && cp target/release/msgtrace /msgtrace-static

FROM scratch
COPY --from=build /msgtrace-static /msgtrace
WORKDIR /devo-collector
ENV CONFIG_FILE=config.yaml
VOLUME ["/devo-collector/config", "/devo-collector/certs", "/devo-collector/state"]
USER 10001:10001
ENTRYPOINT ["/msgtrace"]
CMD ["run"]
