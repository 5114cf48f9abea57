#!/bin/sh
# Install what a fresh Debian 12 machine lacks to build and test relayd.
# Idempotent: asks apt only when a package is missing. Needs root (or sudo).
set -eu
PKGS="build-essential autoconf automake pkg-config libuv1-dev libsqlite3-dev libssl-dev
libc-ares-dev libcmocka-dev libjson-c-dev mandoc clang openssl sqlite3 swaks python3 python3-pytest
procps iproute2 dnsmasq-base fetchmail postfix"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
        missing="$missing $p"
done
[ -z "$missing" ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "installing:$missing" >&2
$SUDO apt-get update -qq
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >&2
