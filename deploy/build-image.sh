#!/usr/bin/env bash
# Builds the registry container image from the release binaries, without pulling anything:
# the base image is made here from the binaries and the shared libraries they link (ldd),
# then `docker import`ed, and deploy/Dockerfile adds the runtime settings on top.
#
#   cargo build --release --bins && deploy/build-image.sh          # -> registry:dev
#   REGISTRY_IMAGE=registry:1.2 deploy/build-image.sh
#
# Environment: REGISTRY_IMAGE (tag of the image, default registry:dev), BIN_DIR (where the
# binaries are, default target/release).
set -euo pipefail
cd "$(dirname "$0")/.."

image=${REGISTRY_IMAGE:-registry:dev}
if [[ $image == *:* ]]; then base="${image%:*}-base:${image##*:}"; else base="$image-base:latest"; fi
bin_dir=${BIN_DIR:-target/release}
bins=(registry registryctl)

for b in "${bins[@]}"; do
    if [ ! -x "$bin_dir/$b" ]; then
        echo "build-image: $bin_dir/$b not found; build it first: cargo build --release --bins" >&2
        exit 1
    fi
done
if ! docker info >/dev/null 2>&1; then
    echo "build-image: the Docker engine does not answer (is dockerd running, may this user use it?)" >&2
    exit 1
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/rootfs
mkdir -p "$root/usr/local/bin" "$root/etc" "$root/tmp" "$stage/context/data"
chmod 1777 "$root/tmp"

# The binaries, without debug info (the release profile keeps line tables for profiling).
for b in "${bins[@]}"; do
    if command -v objcopy >/dev/null 2>&1; then
        objcopy --strip-debug "$bin_dir/$b" "$root/usr/local/bin/$b"
    else
        cp "$bin_dir/$b" "$root/usr/local/bin/$b"
    fi
done

# Every shared library they link, and the dynamic loader, at the paths ldd names.
libs=$(for b in "${bins[@]}"; do ldd "$bin_dir/$b"; done |
    awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u)
for lib in $libs; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done

# A non-root user for the servers; name resolution from /etc/hosts, then DNS (service names
# in compose, stable pod names in Kubernetes).
cat >"$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
registry:x:10001:10001:registry:/data:/sbin/nologin
PASSWD
cat >"$root/etc/group" <<'GROUP'
root:x:0:
registry:x:10001:
GROUP
echo 'hosts: files dns' >"$root/etc/nsswitch.conf"

tar --numeric-owner --owner=0 --group=0 -C "$root" -cf "$stage/rootfs.tar" .
docker import \
    --change 'LABEL org.opencontainers.image.title=registry-base' \
    "$stage/rootfs.tar" "$base" >/dev/null

cp deploy/Dockerfile "$stage/context/Dockerfile"
docker build --quiet --build-arg "BASE=$base" -t "$image" "$stage/context" >/dev/null
size=$(docker image inspect --format '{{.Size}}' "$image")
echo "built $image ($((size / 1024 / 1024)) MiB) on $base"
