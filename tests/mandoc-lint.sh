#!/bin/sh
# mandoc-lint: every man page in man/ must be clean under `mandoc -Tlint -Wwarning`
# and under `groff -mandoc -ww`, which Debian's man uses (groff reports what
# mandoc forgives, e.g. a word read as a macro that drops a whole section).
# Speaks TAP for automake's driver; a missing mandoc is a failure, not a skip,
# because the issue requires the pages to be checked by `make check`.
# Reads only; never edits a page.

srcdir=${top_srcdir:-$(dirname "$0")/..}
mandoc=${MANDOC:-}
[ -n "$mandoc" ] || mandoc=mandoc

if ! command -v "$mandoc" >/dev/null 2>&1; then
	echo "1..1"
	echo "not ok 1 - mandoc not found (MANDOC='$mandoc'); install the mandoc package"
	exit 0
fi

n=0
out=$(mktemp) || exit 99
trap 'rm -f "$out"' EXIT
pages=$(ls "$srcdir"/man/*.[1-8] 2>/dev/null)
if [ -z "$pages" ]; then
	echo "1..1"
	echo "not ok 1 - no man pages found in $srcdir/man"
	exit 0
fi
for page in $pages; do
	n=$((n + 1))
	"$mandoc" -Tlint -Wwarning "$page" >"$out" 2>&1
	rc=$?
	if command -v groff >/dev/null 2>&1; then
		groff -mandoc -ww -z -Tutf8 "$page" >>"$out" 2>&1 || rc=$?
	else
		echo "groff not found; install groff-base" >>"$out"
	fi
	if [ -s "$out" ] || [ $rc -ne 0 ]; then
		echo "not ok $n - mandoc -Tlint, groff -ww $(basename "$page")"
		sed 's/^/# /' "$out"
		[ -s "$out" ] || echo "# mandoc exited $rc"
	else
		echo "ok $n - mandoc -Tlint, groff -ww $(basename "$page")"
	fi
done
echo "1..$n"
