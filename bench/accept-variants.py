#!/usr/bin/env python3
"""Accept rate of relayd under two configurations, alternating, on one queue.

The cost of one feature on the intake path, relayd against itself:

  --compare log    log_level = info (the default) against warn (issue 9:
                   the Postfix-shaped lines; goal <= 5 % apart)
  --compare quota  max_queue_messages and max_queue_bytes set on every
                   domain (high enough that nothing is refused) against none
                   (issue 11: the domain_usage read and the quota check on
                   every RCPT; goal <= 3 % apart)

A backlog of --backlog messages (1 KiB bodies, 100 domains d000..d099, the
injection's domains) is written once straight through SQLite, as
backlog-latency.py does; schema 004's triggers keep domain_usage right as it
is filled, and the script checks it against the recipient table. Then, per
repetition, relayd is started on that queue with configuration A, then B
(order swapped every other repetition), and each time N messages of 4 KiB
are injected by 20 parallel smtp-source lanes (one TCP connection per
message, as the shared harness does); accept rate = messages in the queue
afterwards / wall time. Between runs relayd is stopped and the injected
messages are deleted, so every run sees the same backlog. Prints a RESULT
line per variant (median, per-run values) and the ratio.

Loopback only, kernel-picked ports; stops only the relayd it started, by PID.

    bench/accept-variants.py --compare quota --backlog 20000 -n 5000 --reps 3
    bench/accept-variants.py --compare log -n 5000 --reps 3
"""
import argparse
import importlib.util
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DOMAINS = ["d%03d.etrn.test" % i for i in range(100)]
LANES = 20

_spec = importlib.util.spec_from_file_location("backlog", os.path.join(HERE, "backlog-latency.py"))
backlog = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(backlog)

VARIANTS = {
    "log": (("info", "log_level = info\n", ""), ("warn", "log_level = warn\n", "")),
    "quota": (("none", "log_level = info\n", ""),
              ("quota", "log_level = info\n", "max_queue_messages = 100000000\nmax_queue_bytes = 1000G\n")),
}


def relayd_binary():
    env = os.environ.get("RELAYD_BIN")
    if env:
        return env
    for d in ("_build", "_b", "."):
        p = os.path.join(ROOT, d, "relayd", "relayd")
        if os.access(p, os.X_OK):
            return p
    sys.exit("accept-variants: no relayd binary (build into _build/ or set RELAYD_BIN)")


def write_conf(conf, port, db, work, glob, per_domain):
    with open(conf, "w") as fh:
        fh.write("hostname = relay.bench.test\nlisten = 127.0.0.1:%d\ndatabase = %s\n"
                 "dns_servers = 127.0.0.1:1\nmax_site_connections = 20\n"
                 "control_socket = %s/control.sock\nmax_connections_per_ip = 50\n"
                 "etrn_rate = 1000/1m\n%s" % (port, db, work, glob))
        for d in DOMAINS:
            fh.write("[domain %s]\nmode = hold\nroute = 127.0.0.1:9\n%s" % (d, per_domain))


def start(relayd, conf, log, port):
    """relayd started; ready once it greets on its port (at log_level = warn
    it does not log 'relayd ready')."""
    logf = open(log, "ab")
    p = subprocess.Popen([relayd, "-d", "-f", conf], stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
    logf.close()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if p.poll() is not None:
            sys.exit("accept-variants: relayd exited (%d): see %s" % (p.returncode, log))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                if s.recv(3) == b"220":
                    return p
        except OSError:
            pass
        time.sleep(0.05)
    backlog.stop(p)
    sys.exit("accept-variants: relayd did not greet within 120 s")


def usage_consistent(db):
    con = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
    bad = con.execute(
        "SELECT count(*) FROM (SELECT r.domain, count(DISTINCT r.message_id) AS m, count(*) AS n "
        "FROM recipient r GROUP BY r.domain) c LEFT JOIN domain_usage u ON u.domain = c.domain "
        "WHERE u.messages IS NOT c.m OR u.recipients IS NOT c.n").fetchone()[0]
    con.close()
    return bad == 0


def count(db):
    con = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
    n = con.execute("SELECT count(*) FROM message").fetchone()[0]
    con.close()
    return n


def inject(port, n):
    """N messages in LANES parallel smtp-source jobs; returns wall seconds."""
    per = [n // LANES + (1 if i < n % LANES else 0) for i in range(LANES)]
    t0 = time.perf_counter()
    procs = [subprocess.Popen(
        ["smtp-source", "-A", "-N", "-s", "1", "-m", str(m), "-l", "4096",
         "-M", "source.bench.test", "-f", "bench@source.bench.test",
         "-t", "rcpt@%s" % DOMAINS[i % len(DOMAINS)], "127.0.0.1:%d" % port],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i, m in enumerate(per) if m]
    for p in procs:
        try:
            p.wait(600)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return time.perf_counter() - t0


def cpu_s(pid):
    """utime + stime of a process, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--compare", choices=sorted(VARIANTS), required=True)
    ap.add_argument("--backlog", type=int, default=0, help="messages queued before (default 0)")
    ap.add_argument("-n", type=int, default=5000, help="messages injected per run (default 5000)")
    ap.add_argument("--reps", type=int, default=3, help="runs per variant (default 3)")
    ap.add_argument("--tmpdir", default=None, help="where the queue lives (default $TMPDIR)")
    a = ap.parse_args()
    if not (0 <= a.backlog <= 10_000_000 and 1 <= a.n <= 1_000_000 and 1 <= a.reps <= 20):
        sys.exit("accept-variants: --backlog 0..10M, -n 1..1M, --reps 1..20")
    if not shutil.which("smtp-source"):
        sys.exit("accept-variants: smtp-source missing (Debian package postfix)")
    relayd = relayd_binary()
    work = tempfile.mkdtemp(prefix="relayd-variants.", dir=a.tmpdir)
    try:
        db = os.path.join(work, "queue.db")
        conf = os.path.join(work, "relayd.conf")
        log = os.path.join(work, "relayd.log")
        port = backlog.free_port()
        write_conf(conf, port, db, work, "log_level = info\n", "")
        backlog.stop(start(relayd, conf, log, port))  # creates the schema
        if a.backlog:
            t = time.monotonic()
            backlog.fill(db, a.backlog)
            print("filled %d messages in %.1f s" % (a.backlog, time.monotonic() - t), file=sys.stderr)
        if not usage_consistent(db):
            sys.exit("accept-variants: domain_usage does not match the recipients after the fill")
        base = count(db)
        rates = {v[0]: [] for v in VARIANTS[a.compare]}
        cpus = {v[0]: [] for v in VARIANTS[a.compare]}
        loads = []
        for rep in range(a.reps):
            order = VARIANTS[a.compare] if rep % 2 == 0 else VARIANTS[a.compare][::-1]
            for name, glob, per_domain in order:
                write_conf(conf, port, db, work, glob, per_domain)
                p = start(relayd, conf, log, port)
                try:
                    time.sleep(1.0)  # start-up work (the background check) out of the way
                    loads.append(loadavg())
                    c0 = cpu_s(p.pid)
                    secs = inject(port, a.n)
                    cpu = cpu_s(p.pid) - c0
                finally:
                    backlog.stop(p)
                got = count(db) - base
                if got != a.n:
                    sys.exit("accept-variants: %s run queued %d of %d (log %s)" % (name, got, a.n, log))
                rates[name].append(got / secs)
                cpus[name].append(cpu * 1000.0 / got)
                print("rep %d %-8s %7.0f msg/s  relayd %.3f CPU-ms/msg  (load %s)"
                      % (rep + 1, name, got / secs, cpus[name][-1], loads[-1]), file=sys.stderr)
                con = sqlite3.connect(db)
                con.execute("PRAGMA foreign_keys = ON")
                con.execute("DELETE FROM message WHERE id NOT IN (SELECT id FROM message ORDER BY id LIMIT ?)",
                            (base,))
                con.commit()
                con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                con.close()
                if count(db) != base or not usage_consistent(db):
                    sys.exit("accept-variants: queue not back to the backlog after a run")
        (a_name, _, _), (b_name, _, _) = VARIANTS[a.compare]
        for name, vals in rates.items():
            print("RESULT compare=%s backlog=%d n=%d variant=%s metric=accept_rate unit=msg/s "
                  "median=%.0f values=%s" % (a.compare, a.backlog, a.n, name, statistics.median(vals),
                                             ",".join("%.0f" % v for v in vals)))
            print("RESULT compare=%s backlog=%d n=%d variant=%s metric=relayd_cpu_per_msg unit=ms "
                  "median=%.4f values=%s" % (a.compare, a.backlog, a.n, name, statistics.median(cpus[name]),
                                             ",".join("%.4f" % v for v in cpus[name])))
        ma, mb = statistics.median(rates[a_name]), statistics.median(rates[b_name])
        ca, cb = statistics.median(cpus[a_name]), statistics.median(cpus[b_name])
        # the rate is the goal's figure; relayd's own CPU per message is what
        # a shared machine disturbs least
        print("RESULT compare=%s backlog=%d rate %s/%s=%.3f (%+.1f %%) cpu %s/%s=%.3f (%+.1f %%) load=%s" %
              (a.compare, a.backlog, b_name, a_name, mb / ma, (mb / ma - 1) * 100, b_name, a_name, cb / ca,
               (cb / ca - 1) * 100, " | ".join(loads)))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
