#!/usr/bin/env bash
# A Debian bookworm base image made here, for Docker hosts that cannot pull from a registry:
#   deploy/docker/base/make-base.sh [image-name]      (default calltexts-base:bookworm)
# then build the stack with BASE_IMAGE=<that name> (make stack BASE_IMAGE=...). Hosts that can
# pull use the official debian:bookworm-slim and never need this. Needs root, debootstrap and
# an apt mirror (the first one of this host's apt sources, else deb.debian.org).
set -euo pipefail
image="${1:-calltexts-base:bookworm}"
docker="${DOCKER:-docker}"
if "$docker" image inspect "$image" >/dev/null 2>&1; then
  echo "base image $image exists"; exit 0
fi
# one-line (deb URL ...) and deb822 (URIs: URL) sources, comments skipped
mirror="$(grep -rhE '^(deb|URIs:)[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
  | grep -oE 'https?://[^ ]+/debian/?$|https?://[^ ]+/debian/? ' | grep -v security | head -1 | tr -d ' ' || true)"
mirror="${mirror:-http://deb.debian.org/debian}"
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase bookworm "$root" "$mirror" >/dev/null
# The same sources inside as debian:bookworm-slim has (updates and security included).
cat >"$root/etc/apt/sources.list" <<SOURCES
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb ${mirror%/debian*}/debian-security bookworm-security main
SOURCES
# As in debian:bookworm-slim: no translations of package descriptions to download.
echo 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/99no-translations"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | "$docker" import - "$image" >/dev/null
echo "base image $image made from $mirror"
