#!/bin/sh
# run-pytest: runs the integration suite (real relayd on loopback) under
# automake's TAP driver. TAP lines come from tap_plugin.py on the real stdout;
# everything pytest itself prints goes to stderr, so it can never be read as TAP.
# Extra arguments are passed to pytest (e.g. -k smuggling when run by hand).

here=$(cd "$(dirname "$0")" && pwd)
: "${top_srcdir:=$(cd "$here/../.." && pwd)}"
export top_srcdir
PYTHON=${PYTHON:-/usr/bin/python3}

done_file=$(mktemp) || exit 99
rm -f "$done_file"
trap 'rm -f "$done_file"' EXIT

PYTHONPATH="$top_srcdir/tests/integration${PYTHONPATH:+:$PYTHONPATH}"
PYTHONDONTWRITEBYTECODE=1
RELAYD_TAP_FD=3
RELAYD_TAP_DONE=$done_file
export PYTHONPATH PYTHONDONTWRITEBYTECODE RELAYD_TAP_FD RELAYD_TAP_DONE

"$PYTHON" -m pytest -p no:cacheprovider -p tap_plugin -q -rfE --tb=short --continue-on-collection-errors \
	--rootdir "$top_srcdir/tests/integration" \
	"$top_srcdir/tests/integration" "$@" 3>&1 1>&2
rc=$?

if [ ! -s "$done_file" ]; then
	echo "Bail out! pytest could not run (exit status $rc; is python3-pytest installed?)"
	exit 1
fi
exit 0
