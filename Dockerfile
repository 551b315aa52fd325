# keywire container image: `keywire webhook` (and, once released, `keywire controller`).
#
#   docker build -t keywire:dev .
#
# Multi-stage: a Rust builder makes a static musl binary; the runtime is distroless/static,
# non-root (uid 65532), with nothing but the binary and CA roots. rustls + ring need no OpenSSL
# and no libc at run time. (Not built in this repository's CI: it has no container engine.)

FROM rust:1.95-bookworm AS build
RUN rustup target add x86_64-unknown-linux-musl \
 && apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY e2e/suite ./e2e/suite
RUN cargo build --locked --release --target x86_64-unknown-linux-musl --bin keywire \
 && cp target/x86_64-unknown-linux-musl/release/keywire /keywire

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /keywire /keywire
USER 65532:65532
EXPOSE 8443 9090
ENTRYPOINT ["/keywire"]
CMD ["webhook"]
