#!/bin/sh
# include-graph: keeps STYLE.md's include rules honest. Each library stays behind
# its own file(s) (sqlite3.h: relayd/store*.c, openssl/: lib/tls.c, ares.h: lib/dns.c),
# the pure parsers never see libuv, and every header has its RELAYD_<STEM>_H guard
# and compiles on its own. Speaks TAP; reads the tree, never changes it.

srcdir=${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$srcdir" || { echo "1..1"; echo "not ok 1 - cannot cd to $srcdir"; exit 0; }
CC=${CC:-cc}

tmp=$(mktemp -d) || exit 99
trap 'rm -rf "$tmp"' EXIT
printf '#define _GNU_SOURCE 1\n' >"$tmp/gnu.h"
uv_cflags=$(pkg-config --cflags libuv 2>/dev/null)

n=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
notok() { n=$((n + 1)); echo "not ok $n - $1"; }

# Production sources: everything the daemon and etrnctl are built from.
sources=$(ls lib/*.[ch] relayd/*.[ch] etrnctl/*.[ch] 2>/dev/null)

# includers PATTERN: the files that #include a header matching the ERE PATTERN
includers() {
	for f in $sources; do
		grep -Eq "^[[:space:]]*#[[:space:]]*include[[:space:]]*[<\"]$1" "$f" && echo "$f"
	done
}

# owned_by PATTERN LABEL ALLOWED [WHO]: only files whose whole name matches the
# BRE ALLOWED (or nobody) may include PATTERN; WHO names them in the output.
owned_by() {
	bad=$(includers "$1" | grep -vx "$3")
	if [ -z "$bad" ]; then
		ok "$2 is included only by ${4:-$3}"
	else
		notok "$2 is included only by ${4:-$3}"
		for f in $bad; do echo "# included by $f"; done
	fi
}

owned_by 'sqlite3\.h[>"]' 'sqlite3.h' 'relayd/store[a-z_]*\.c' 'relayd/store*.c'
owned_by 'openssl/' 'openssl/*' 'lib/tls.c'
# lib/dns.c may not exist yet; then nobody may include ares.h.
owned_by 'ares\.h[>"]' 'ares.h' 'lib/dns.c'
# GNU SASL stays behind the AUTH files: the daemon's exchange, its hash worker, the
# shared client side, and etrnctl credentials (SCRAM key derivation).
owned_by 'gsasl\.h[>"]' 'gsasl.h' 'relayd/auth.c\|relayd/auth_worker.c\|lib/sasl_client.c\|etrnctl/credentials_cmd.c'
# crypt(3) only where hashes are checked or made.
owned_by 'crypt\.h[>"]' 'crypt.h' 'relayd/auth_worker.c\|relayd/credentials.c\|etrnctl/credentials_cmd.c'

# The pure parsers must not see libuv, not even through a header they include:
# ask the preprocessor for the full dependency list.
for f in lib/smtp_parse.c lib/addr.c lib/smtp_data.c lib/buf.c lib/dns_answer.c lib/ctl_request.c \
	lib/smtp_reply.c; do
	if [ ! -f "$f" ]; then
		notok "$f exists (pure parser)"
		continue
	fi
	if ! $CC -std=gnu11 -M -include "$tmp/gnu.h" -iquote lib -iquote relayd $uv_cflags "$f" >"$tmp/deps" 2>"$tmp/err"; then
		notok "$f does not include uv.h (preprocessor failed)"
		sed 's/^/# /' "$tmp/err"
	elif tr ' \\' '\n\n' <"$tmp/deps" | grep -Eq '(^|/)uv\.h$'; then
		notok "$f does not include uv.h"
		echo "# $f pulls in uv.h (directly or through a header)"
	else
		ok "$f does not include uv.h"
	fi
done

for h in lib/*.h relayd/*.h etrnctl/*.h; do
	[ -f "$h" ] || continue
	stem=$(basename "$h" .h | tr 'a-z-' 'A-Z_')
	guard="RELAYD_${stem}_H"
	if grep -Eq "^[[:space:]]*#[[:space:]]*ifndef[[:space:]]+$guard([[:space:]]|$)" "$h" &&
		grep -Eq "^[[:space:]]*#[[:space:]]*define[[:space:]]+$guard([[:space:]]|$)" "$h"; then
		ok "$h has include guard $guard"
	else
		notok "$h has include guard $guard"
	fi
	if $CC -std=gnu11 -fsyntax-only -Wall -Wextra -include "$tmp/gnu.h" -iquote lib -iquote relayd \
		$uv_cflags -x c "$h" >"$tmp/err" 2>&1 && [ ! -s "$tmp/err" ]; then
		ok "$h compiles alone"
	else
		notok "$h compiles alone"
		sed 's/^/# /' "$tmp/err"
	fi
done

echo "1..$n"
