#!/bin/sh
# replay_cred_line: TAP test for `make check`. Replays the seed corpus of the
# cred_line fuzz target through the plain-main driver (tests/fuzz/replay.c),
# under whatever sanitizers the build has. Reads only; writes nothing.
: "${top_srcdir:?top_srcdir must be set}"
: "${top_builddir:?top_builddir must be set}"

corpus="$top_srcdir/tests/fuzz/corpus/cred_line"
replay="$top_builddir/tests/fuzz/replay_cred_line"
log="${TMPDIR:-/tmp}/replay_cred_line.$$.log"
trap 'rm -f "$log"' EXIT

echo "1..1"
if [ ! -x "$replay" ] || [ ! -d "$corpus" ]; then
    echo "not ok 1 - corpus replay (missing $replay or $corpus)"
    exit 0
fi
want=$(find "$corpus" -maxdepth 1 -type f ! -name '.*' | wc -l | tr -d ' ')
"$replay" "$corpus" 2>"$log"
rc=$?
got=$(sed -n 's/^replay: \([0-9][0-9]*\) inputs replayed$/\1/p' "$log" | tail -n 1)
if [ "$rc" -eq 0 ] && [ "$want" -gt 0 ] && [ "$got" = "$want" ]; then
    echo "ok 1 - corpus replay ($got files)"
else
    sed 's/^/# /' "$log" | tail -n 40
    echo "not ok 1 - corpus replay (exit $rc, replayed ${got:-0} of $want files)"
fi
exit 0
