#!/bin/sh
# The README's Quick start:
#   tools/quickstart.sh run    install what is missing, build, run relayd in the
#                              foreground on etc/relayd.conf (127.0.0.1:2525)
#   tools/quickstart.sh test   install what is missing, build with ASan/UBSan and
#                              run the whole test suite; ends with "N passed, N failed"
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
what=${1:-}
case "$what" in
run | test) ;;
*)
    echo "usage: tools/quickstart.sh run|test" >&2
    exit 64
    ;;
esac

# run needs what builds and runs relayd; test also the peers the tests talk to
if [ "$what" = run ]; then
    sh tools/install-deps.sh build
else
    sh tools/install-deps.sh test
fi
[ -x configure ] || autoreconf -fi >/dev/null

if [ "$what" = run ]; then
    # The queue holds other people's mail: nobody else may read it.
    mkdir -p run
    chmod 700 run
    mkdir -p _build
    cd _build
    [ -f Makefile ] || ../configure -q
    make -s -j"$(nproc)" relayd/relayd etrnctl/etrnctl
    cat >&2 <<'MSG'

relayd is starting on 127.0.0.1:2525 with etc/relayd.conf (queue in run/queue.db).
Send it a message from another terminal, for example:
    swaks --server 127.0.0.1:2525 --from you@example.net --to user@example.org
and look at the queue:
    _build/etrnctl/etrnctl -S run/control.sock queue
Ask for example.org's mail as its site would (ETRN; example.org's real MX
is not reachable from a loopback-only setup, so it stays deferred):
    _build/etrnctl/etrnctl etrn -H 127.0.0.1:2525 example.org
Stop it with Ctrl-C.

MSG
    exec ./relayd/relayd -d -f ../etc/relayd.conf
fi

mkdir -p _build-test
cd _build-test
[ -f Makefile ] || ../configure -q --enable-sanitize
make -s -j"$(nproc)"
status=0
make -s -j"$(nproc)" check >make-check.out 2>&1 || status=$?
# Show what failed, then the one-line total the CI reads.
grep -E '^(FAIL|ERROR|XPASS):' make-check.out || true
if [ "$status" -ne 0 ] && [ ! -f test-suite.log ]; then
    tail -n 40 make-check.out
    echo "0 passed, 1 failed"
    exit 1
fi
count() { sed -n "s/^# $1: *\([0-9]*\)\$/\1/p" test-suite.log | head -n 1; }
pass=$(count PASS)
fail=$(( $(count FAIL) + $(count ERROR) + $(count XPASS) ))
skip=$(count SKIP)
[ "$status" -eq 0 ] || [ "$fail" -gt 0 ] || fail=1
if [ "${skip:-0}" -gt 0 ]; then
    echo "${pass:-0} passed, $fail failed, $skip skipped"
else
    echo "${pass:-0} passed, $fail failed"
fi
[ "$fail" -eq 0 ]
