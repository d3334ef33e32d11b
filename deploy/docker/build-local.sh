#!/usr/bin/env bash
# Build deploy/docker/Dockerfile with Debian's podman and smoke-test the image, on a machine
# that cannot pull docker.io (no rust:1.95-bookworm, no debian:bookworm-slim) and has no
# Docker engine: Debian 12 host, root, apt + crates.io reachable, a rustup-managed Rust.
#
# NOT for CI: it installs packages, writes /etc/containers/containers.conf and a release build
# takes ~10-20 min on 2 cores. Run it by hand:  sudo deploy/docker/build-local.sh
#
# What it does (each step is skipped when its result already exists; FORCE=1 redoes all):
#   1. apt-get install podman buildah debootstrap runc ...; containers.conf for this sandbox:
#      - runtime = runc: crun 1.8 refuses the host's hybrid cgroup v1+v2 layout
#        ("cgroups in hybrid mode not supported, drop all controllers from cgroupv2");
#      - default_ulimits within the host's hard limits: podman asks for nofile=1048576 and
#        nproc=4194304, and raising a hard limit is refused here ("setrlimit RLIMIT_NOFILE:
#        Operation not permitted").
#   2. localhost/debian:bookworm-slim = `debootstrap --variant=minbase bookworm`, trimmed like
#      the official slim image (no docs/man/locales), imported with `podman import`.
#   3. localhost/rust:1.95-bookworm = that + gcc/libc6-dev/make/pkg-config/git/curl + the host's
#      rustup toolchain $RUST_VERSION, at /usr/local/rustup and /usr/local/cargo like the
#      official image. The Dockerfile's short names resolve to these localhost/ images, so the
#      Dockerfile is used unchanged.
#      The host's extra CAs (/usr/local/share/ca-certificates/*.crt) are added to this local
#      stand-in only: the sandbox's egress proxy re-signs TLS, and without them cargo fails with
#      "SSL certificate problem: self-signed certificate in certificate chain". (Mounting the
#      host bundle with `podman build --volume` instead breaks the runtime stage: its
#      ca-certificates postinst cannot replace the mounted file, "Device or resource busy".)
#      The brainfit image's runtime stage is built from debian:bookworm-slim and gets none of it.
#   4. podman build of deploy/docker/Dockerfile -> localhost/brainfit:test, host network.
#   5. podman run: --version, `demo`, user 10001, image size.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WORK=${WORK:-/var/tmp/brainfit-image}          # debootstrap root, rust image context
MIRROR=${MIRROR:-http://deb.debian.org/debian}   # the host's mirror (see /etc/apt/sources.list*)
RUST_VERSION=${RUST_VERSION:-1.95.0}             # must match the Dockerfile's rust:X.Y tag
IMAGE=${IMAGE:-localhost/brainfit:test}
FORCE=${FORCE:-0}

log() { printf '\n=== %s\n' "$*" >&2; }
have_image() { [[ $FORCE != 1 ]] && podman image exists "$1"; }

[[ $(id -u) == 0 ]] || { echo "run as root (podman rootful, debootstrap)" >&2; exit 1; }
mkdir -p "$WORK"

# ---- 1. packages + podman configuration ------------------------------------------------------
log "1. packages"
pkgs=(podman buildah debootstrap runc crun uidmap fuse-overlayfs slirp4netns netavark
      aardvark-dns containernetworking-plugins ca-certificates)
missing=()
for p in "${pkgs[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p"); done
if ((${#missing[@]})); then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

CONF=/etc/containers/containers.conf
MARK='# written by brainfit deploy/docker/build-local.sh'
if [[ ! -e $CONF ]] || grep -qF "$MARK" "$CONF"; then
    nofile=$(ulimit -Hn); [[ $nofile == unlimited || $nofile -gt 1048576 ]] && nofile=1048576
    nproc=$(ulimit -Hu);  [[ $nproc == unlimited || $nproc -gt 32768 ]] && nproc=32768
    cat > "$CONF" <<EOF
$MARK
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
[engine]
runtime = "runc"
EOF
else
    echo "$CONF exists and is not ours; leaving it alone" >&2
fi
# Storage: podman's default for root (overlay on ext4/xfs) works here. If the kernel refuses
# overlay mounts, put  [storage] driver = "vfs"  in /etc/containers/storage.conf and
# `podman system reset -f` (vfs copies every layer: slower, ~2x the disk).

# ---- 2. debian:bookworm-slim stand-in --------------------------------------------------------
if have_image localhost/debian:bookworm-slim; then
    log "2. localhost/debian:bookworm-slim exists"
else
    log "2. debootstrap bookworm minbase from $MIRROR"
    R=$WORK/rootfs-slim
    rm -rf "$R"
    debootstrap --variant=minbase bookworm "$R" "$MIRROR"
    rm -f "$R/etc/apt/sources.list"
    cat > "$R/etc/apt/sources.list.d/debian.sources" <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    # What debian:*-slim drops, now and for later installs.
    cat > "$R/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
    # The apt settings of the official image (debuerreotype): no pkgcache.bin/srcpkgcache.bin
    # (~80 MB) or .debs left behind by `apt-get install`, no translations, gzipped indexes.
    cat > "$R/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
    echo 'Apt::AutoRemove::SuggestsImportant "false";' > "$R/etc/apt/apt.conf.d/docker-autoremove-suggests"
    printf 'Acquire::GzipIndexes "true";\nAcquire::CompressionTypes::Order:: "gz";\n' > "$R/etc/apt/apt.conf.d/docker-gzip-indexes"
    echo 'Acquire::Languages "none";' > "$R/etc/apt/apt.conf.d/docker-no-languages"
    find "$R/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    rm -rf "$R"/usr/share/man/* "$R"/usr/share/info/*
    find "$R/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
    rm -rf "$R"/var/lib/apt/lists/* "$R"/var/cache/apt/*.bin "$R"/var/cache/apt/archives/*.deb \
           "${R:?}"/var/log/*.log "${R:?}"/dev/*   # the runtime provides /dev
    tar --numeric-owner -C "$R" -c . \
        | podman import --change 'CMD ["bash"]' - localhost/debian:bookworm-slim
    rm -rf "$R"
fi

# ---- 3. rust:1.95-bookworm stand-in ----------------------------------------------------------
RUST_TAG=localhost/rust:${RUST_VERSION%.*}-bookworm
if have_image "$RUST_TAG"; then
    log "3. $RUST_TAG exists"
else
    log "3. $RUST_TAG from the host's rustup toolchain $RUST_VERSION"
    sysroot=$(rustup run "$RUST_VERSION" rustc --print sysroot) \
        || { echo "no rustup toolchain $RUST_VERSION on this host (rustup toolchain list)" >&2; exit 1; }
    rustup_bin=$(command -v rustup)
    C=$WORK/rust-ctx
    TC=$C/rustup/toolchains/$RUST_VERSION-x86_64-unknown-linux-gnu
    rm -rf "$C"
    mkdir -p "$TC" "$C/cargo/bin"
    # The whole toolchain but its HTML docs (~800 MB); cd follows a symlinked toolchain dir.
    (cd "$sysroot" && tar -c --exclude=./share/doc .) | tar -C "$TC" -x
    cp "$rustup_bin" "$C/cargo/bin/rustup"
    for p in cargo cargo-clippy cargo-fmt clippy-driver rustc rustdoc rustfmt rust-gdb rust-gdbgui rust-lldb; do
        ln -sf rustup "$C/cargo/bin/$p"
    done
    printf 'version = "12"\ndefault_toolchain = "%s-x86_64-unknown-linux-gnu"\nprofile = "minimal"\nauto_self_update = "disable"\n\n[overrides]\n' \
        "$RUST_VERSION" > "$C/rustup/settings.toml"
    chmod -R a+w "$C/rustup" "$C/cargo"    # as the official image (any uid may use cargo)
    mkdir -p "$C/extra-ca"
    cp /usr/local/share/ca-certificates/*.crt "$C/extra-ca/" 2>/dev/null || true
    cat > "$C/Containerfile" <<EOF
FROM localhost/debian:bookworm-slim
ENV RUSTUP_HOME=/usr/local/rustup \\
    CARGO_HOME=/usr/local/cargo \\
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    RUST_VERSION=$RUST_VERSION
RUN apt-get update \\
    && apt-get install -y --no-install-recommends ca-certificates curl git gcc libc6-dev make pkg-config \\
    && rm -rf /var/lib/apt/lists/*
COPY extra-ca /usr/local/share/ca-certificates
RUN update-ca-certificates
COPY rustup /usr/local/rustup
COPY cargo /usr/local/cargo
RUN rustup --version && cargo --version && rustc --version
EOF
    podman build --network host -t "$RUST_TAG" -f "$C/Containerfile" "$C"
    rm -rf "$C"
fi

# ---- 4. the brainfit image -------------------------------------------------------------------
log "4. podman build $IMAGE (release build: slow)"
[[ -f $REPO/.dockerignore ]] || { echo "$REPO/.dockerignore missing: the context would include target/" >&2; exit 1; }
start=$SECONDS
podman build --network host -f "$REPO/deploy/docker/Dockerfile" -t "$IMAGE" "$REPO"
echo "build: $((SECONDS - start)) s" >&2

# ---- 5. smoke test ---------------------------------------------------------------------------
log "5. smoke test"
user=$(podman image inspect --format '{{.Config.User}}' "$IMAGE")
[[ $user == 10001:10001 ]] || { echo "image user is '$user', expected 10001:10001" >&2; exit 1; }
podman run --rm "$IMAGE" --version
podman run --rm --entrypoint id "$IMAGE"
podman run --rm "$IMAGE" demo --out /tmp/demo
podman image ls "$IMAGE"
log "OK: $IMAGE"
