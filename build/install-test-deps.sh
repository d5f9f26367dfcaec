#!/usr/bin/env bash
# Installs the Debian packages the tests use, if missing: gcc and kernel headers (the ABI test
# compiles a C program against <linux/io_uring.h>), curl and h2load (real HTTP/2 clients), wrk, and
# clang and zlib headers (the Native AOT compiler links the native binary with them).
set -uo pipefail

missing=()
command -v gcc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
[ -f /usr/include/linux/io_uring.h ] || missing+=(linux-libc-dev)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v h2load >/dev/null 2>&1 || missing+=(nghttp2-client)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v clang >/dev/null 2>&1 || missing+=(clang)
[ -f /usr/include/zlib.h ] || missing+=(zlib1g-dev)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "note: missing test tools (${missing[*]}); run as root or: sudo apt-get install -y ${missing[*]}" >&2
  exit 0
fi

echo "installing test tools: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null 2>&1 || true
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
  || echo "warning: apt-get install failed for: ${missing[*]}" >&2
exit 0
