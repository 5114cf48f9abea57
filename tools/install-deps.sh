#!/bin/sh
# install-deps: install what a fresh Debian 12 machine lacks.
#   tools/install-deps.sh build   to build and run relayd and etrnctl
#   tools/install-deps.sh test    the above, and the peers the tests run
# Idempotent: asks apt only when a package is missing. Needs root (or sudo).
# Installing must not leave a new system daemon running or enabled (the test
# peers include MTAs such as Postfix): policy-rc.d forbids starting services
# while apt runs, and the units the new packages ship are disabled after.
set -eu
what=${1:-test}

# Building and running.
BUILD_PKGS="build-essential autoconf automake pkg-config libuv1-dev libsqlite3-dev libssl-dev
libc-ares-dev libjson-c-dev libgsasl-dev libcrypt-dev openssl"
# Testing: the unit test framework, lint, and the real peers of the integration tests.
TEST_PKGS="libcmocka-dev mandoc groff-base clang sqlite3 swaks python3 python3-pytest
procps iproute2 dnsmasq-base fetchmail postfix
msmtp gsasl whois fail2ban libnet-ssleay-perl libio-socket-ssl-perl libdigest-hmac-perl libauthen-sasl-perl"

case "$what" in
build) PKGS=$BUILD_PKGS ;;
test) PKGS="$BUILD_PKGS $TEST_PKGS" ;;
*)
    echo "usage: tools/install-deps.sh build|test" >&2
    exit 64
    ;;
esac

missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
        missing="$missing $p"
done
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
# Exim 4 plays a site's MTA in the tests without being installed: the tests
# fetch Debian's packages with `apt-get download` (tests/integration/exim_site.py),
# which needs only apt's package lists to know them.
if [ "$what" = test ] && ! apt-cache show exim4-daemon-light >/dev/null 2>&1; then
    $SUDO apt-get update -qq
fi
[ -z "$missing" ] && exit 0
echo "installing:$missing" >&2

# invoke-rc.d asks /usr/sbin/policy-rc.d; 101 means "action forbidden".
policy=/usr/sbin/policy-rc.d
made_policy=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    made_policy=1
fi
cleanup() { [ -z "$made_policy" ] || $SUDO rm -f "$policy"; }
trap cleanup EXIT

$SUDO apt-get update -qq
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >&2

# Units of what was just installed: enabled by the packages' scripts, not by anyone here.
for p in $missing; do
    dpkg -L "$p" 2>/dev/null | grep -E '^/(usr/)?lib/systemd/system/[^/@]+\.(service|socket|timer)$' |
        while read -r unit; do
            $SUDO systemctl disable --no-reload "$(basename "$unit")" >/dev/null 2>&1 || true
        done
done
