#!/bin/sh
# replay: TAP test for `make check`. For every fuzz target (a
# tests/fuzz/fuzz_NAME.c that defines LLVMFuzzerTestOneInput) replays its seed
# corpus, tests/fuzz/corpus/NAME/, through the plain-main driver built from
# it (tests/fuzz/replay_NAME: the target and replay.c), under whatever
# sanitizers the build has. One test per target; a target without a corpus
# or a driver fails. Reads only, but for a log per target in TMPDIR.
: "${top_srcdir:?top_srcdir must be set}"
: "${top_builddir:?top_builddir must be set}"

fuzzdir="$top_srcdir/tests/fuzz"
log="${TMPDIR:-/tmp}/replay.$$.log"
trap 'rm -f "$log"' EXIT

targets=$(grep -l '^int LLVMFuzzerTestOneInput(.*[^;]$' "$fuzzdir"/fuzz_*.c |
    sed 's|.*/fuzz_\(.*\)\.c$|\1|' | sort)
n=$(echo "$targets" | wc -w | tr -d ' ')
echo "1..$n"
i=0
for t in $targets; do
    i=$((i + 1))
    corpus="$fuzzdir/corpus/$t"
    replay="$top_builddir/tests/fuzz/replay_$t"
    if [ ! -x "$replay" ] || [ ! -d "$corpus" ]; then
        echo "not ok $i - $t: corpus replay (missing $replay or $corpus)"
        continue
    fi
    want=$(find "$corpus" -maxdepth 1 -type f ! -name '.*' | wc -l | tr -d ' ')
    "$replay" "$corpus" 2>"$log"
    rc=$?
    got=$(sed -n 's/^replay: \([0-9][0-9]*\) inputs replayed$/\1/p' "$log" | tail -n 1)
    if [ "$rc" -eq 0 ] && [ "$want" -gt 0 ] && [ "$got" = "$want" ]; then
        echo "ok $i - $t: corpus replay ($got files)"
    else
        sed 's/^/# /' "$log" | tail -n 40
        echo "not ok $i - $t: corpus replay (exit $rc, replayed ${got:-0} of $want files)"
    fi
done
exit 0
