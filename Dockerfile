# otpgate container image: docker build -t otpgate .
#
# The build stage runs scripts/container-build, which CI also runs (tests/it/container_build.rs),
# so what is staged and checked here is checked on every change without Docker; that test
# also runs this build stage itself, in order, from the context .dockerignore lets through.
# No HEALTHCHECK: orchestrators probe /livez and /readyz on the admin port (9090).

# Bookworm builder to match the Debian 12 runtime's glibc.
FROM rust:1.95.0-slim-bookworm AS build
WORKDIR /src

# The allocator (jemalloc, by tikv-jemallocator) is built from C with make, which the slim
# image lacks.
RUN apt-get update \
 && apt-get install -y --no-install-recommends make \
 && rm -rf /var/lib/apt/lists/*

# Dependencies only, cached until Cargo.toml, Cargo.lock or a bench changes: build against
# empty sources, then forget otpgate's own artifacts so the real sources are always compiled.
# Cargo.toml's [[bench]] targets name files in benches/, and cargo refuses to load a
# manifest whose targets have no file, so the benches come with it (`cargo build` never
# compiles them). The real files rather than stubs generated from the manifest: stubs would
# keep this layer keyed on Cargo.toml alone, but only by parsing every [[bench]] table (its
# name, a `path` key) in shell; editing a bench rebuilds this layer instead. The manifest's
# other targets are the stubs below (lib, bin); it declares no [[example]] or [[test]], and
# fuzz/ is a workspace of its own, not a member.
COPY Cargo.toml Cargo.lock ./
COPY benches/*.rs benches/
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked \
 && cargo clean --release --package otpgate \
 && rm -rf src

COPY src/ src/
COPY config/ config/
COPY scripts/container-build scripts/container-build
# The commit the image is built from, for otpgate_build_info:
# docker build --build-arg OTPGATE_COMMIT=$(git rev-parse --short=12 HEAD) -t otpgate .
ARG OTPGATE_COMMIT=unknown
RUN scripts/container-build --out /out

# Runtime: glibc and libgcc_s, CA certificates, no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/usr/local/bin/otpgate /usr/local/bin/otpgate
COPY --from=build /out/etc/otpgate/ /etc/otpgate/
# Listen on every interface inside the container; the file's admin default is loopback,
# which probes cannot reach. Environment overrides the config file.
ENV OTPGATE__SERVER__LISTEN=0.0.0.0:8080 \
    OTPGATE__ADMIN__LISTEN=0.0.0.0:9090
# distroless's nonroot user, by number so Kubernetes' runAsNonRoot can verify it.
USER 65532:65532
# 8080 public (gateway), 9090 admin (/livez, /readyz, /metrics): keep 9090 private.
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/otpgate"]
CMD ["run", "--config", "/etc/otpgate/otpgate.toml"]
