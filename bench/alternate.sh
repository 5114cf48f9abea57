#!/usr/bin/env bash
# Alternating side-by-side run (BASELINE.md rule 11): Postfix, relayd,
# Postfix, relayd ... through ../shared/bench/run.sh, one repetition per
# run, then the median of each figure per target. Does not start anything
# itself beyond run.sh; every run writes its own --out directory.
#
#   bench/alternate.sh [--pairs K] [--out DIR] [run.sh options, e.g. --profile quick]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
run=${BENCH_RUN:-$root/../shared/bench/run.sh}
[ -x "$run" ] || run=/work/shared/bench/run.sh
pairs=2
out=
while [ $# -gt 0 ]; do
    case "$1" in
    --pairs) pairs=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) break ;;
    esac
done
case "$pairs" in '' | *[!0-9]*) echo "--pairs needs a number" >&2; exit 2 ;; esac
[ "$pairs" -ge 1 ] && [ "$pairs" -le 10 ] || { echo "--pairs 1..10" >&2; exit 2; }
[ -n "$out" ] || out=$(mktemp -d /tmp/bench-alt.XXXXXX)
mkdir -p "$out"
for i in $(seq "$pairs"); do
    for t in postfix relayd; do
        tgt=$t
        [ "$t" = relayd ] && tgt="$root/bench/relayd-target.sh"
        echo "== $t $i: $(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/load.txt" >&2
        "$run" --target "$tgt" --only target --reps 1 --out "$out/$t$i" "$@" \
            >"$out/$t$i.out" 2>"$out/$t$i.err" || true
    done
done
echo "== end: $(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/load.txt" >&2
python3 - "$out" "$pairs" <<'PY'
import re, statistics, sys
out, pairs = sys.argv[1], int(sys.argv[2])
metrics = ["accept_rate", "flush_rate", "cpu_accept_per_1k", "cpu_flush_per_1k",
           "pss_peak_accept", "pss_peak_flush", "etrn_latency_first",
           "etrn_latency_last", "unattributed_cpu_accept", "unattributed_cpu_flush",
           "machine_busy_accept", "checks_failed"]
vals = {}
for t in ("postfix", "relayd"):
    for i in range(1, pairs + 1):
        try:
            text = open(f"{out}/{t}{i}.out").read()
        except OSError:
            continue
        for m in re.finditer(r"^RESULT target=\S+ profile=\S+ metric=(\S+) unit=(\S*) n=\d+ median=(\S+)", text, re.M):
            if m.group(1) in metrics:
                try:
                    vals.setdefault((t, m.group(1)), []).append(float(m.group(3)))
                except ValueError:
                    pass
print(f"{'metric':28} {'postfix (runs)':>28} {'relayd (runs)':>28} {'ratio':>7}")
for m in metrics:
    p, r = vals.get(("postfix", m), []), vals.get(("relayd", m), [])
    mp = statistics.median(p) if p else float("nan")
    mr = statistics.median(r) if r else float("nan")
    ratio = mr / mp if p and r and mp else float("nan")
    fmt = lambda xs: ",".join(f"{x:g}" for x in xs)
    print(f"{m:28} {mp:10.4g} ({fmt(p)[:16]:>16}) {mr:10.4g} ({fmt(r)[:16]:>16}) {ratio:7.2f}")
PY
