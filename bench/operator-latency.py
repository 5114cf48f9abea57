#!/usr/bin/env python3
"""Operator commands and start-up with a large queue (relayd alone; issue 9).

Fills relayd's queue with N messages for 100 domains straight through
SQLite, as relayd writes them: rdomain is the domain reversed character by
character, and schema 004/005's triggers keep domain_usage, domain_age and
queue_totals as relayd's own transactions do. Arrivals are spread evenly
over the last 48 hours, so every qshape age bucket holds mail and the
limits cut through 5-minute slots. Then, for each N:

  ready_ms   relayd -d started -> "relayd ready" in its log (median of 3 starts;
             the whole-file integrity check runs after it, its time is shown)
  summary/domains/stats/check  wall time of `etrnctl CMD` (process start
             included), median of 5, once the integrity check is over

Loopback only; every process it starts is stopped by PID.

    bench/operator-latency.py --relayd _build/relayd/relayd --etrnctl _build/etrnctl/etrnctl \\
        -n 20000 -n 100000 -n 1000000
"""
import argparse
import os
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

SPREAD = 48 * 3600


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def start(relayd, conf, log):
    """Start relayd; (process, seconds to "relayd ready")."""
    off = os.path.getsize(log) if os.path.exists(log) else 0
    t0 = time.monotonic()
    p = subprocess.Popen([relayd, "-d", "-f", conf], stderr=open(log, "ab"))
    while time.monotonic() - t0 < 600:
        with open(log, "rb") as fh:
            fh.seek(off)
            if b"relayd ready" in fh.read():
                return p, time.monotonic() - t0, off
        if p.poll() is not None:
            sys.exit("relayd exited: see %s" % log)
        time.sleep(0.002)
    p.kill()
    sys.exit("relayd not ready")


def wait_check(log, off, timeout=600):
    """Seconds from ready until the background integrity check's line."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        with open(log, "rb") as fh:
            fh.seek(off)
            text = fh.read().decode("utf-8", "replace")
        if "integrity check ok" in text:
            stamps = re.findall(r"T(\d\d):(\d\d):(\d\d\.\d+)Z[^\n]*(relayd ready|integrity check ok)", text)
            t = {k: int(h) * 3600 + int(mi) * 60 + float(s) for h, mi, s, k in stamps}
            return t["integrity check ok"] - t["relayd ready"]
        if "is damaged" in text:
            sys.exit("the integrity check found damage: see %s" % log)
        time.sleep(0.05)
    sys.exit("no integrity check line")


def stop(p):
    p.terminate()
    try:
        p.wait(60)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def fill(db, n):
    """n messages, one recipient each, over d000..d099.etrn.test, arrivals
    over the last SPREAD seconds, ids growing with arrival as relayd's do."""
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")  # filling only; relayd opens it with FULL
    now = int(time.time())
    con.execute("BEGIN")
    con.execute(
        "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s WHERE i<?) "
        "INSERT INTO message(id, queue_id, arrival, sender, size, client_addr, client_helo) "
        "SELECT i, printf('BACKLOG%07d', i), ? - (? - i) * ? / ?, 'bench@src.test', 1024, '127.0.0.1', 'fill' FROM s",
        (n, now, n, SPREAD, n))
    con.execute("INSERT INTO message_body(message_id, data) SELECT id, zeroblob(1024) FROM message")
    con.execute(
        "INSERT INTO recipient(message_id, domain, rdomain, address) "
        "SELECT id, printf('d%03d.etrn.test', id % 100), "
        # rdomain is the domain reversed character by character (schema 002):
        # d042.etrn.test -> tset.nrte.240d
        "'tset.nrte.' || (id % 10) || ((id / 10) % 10) || '0d', "
        "printf('u%d@d%03d.etrn.test', id, id % 100) FROM message")
    con.execute("COMMIT")
    for domain, rdomain in con.execute("SELECT domain, rdomain FROM recipient WHERE id IN (1, 42, ?)", (n,)):
        assert rdomain == domain[::-1], (domain, rdomain)
    # the triggers kept the per-domain table: check one domain against its rows
    got = con.execute("SELECT messages, bytes FROM domain_usage WHERE domain = 'd042.etrn.test'").fetchone()
    want = con.execute("SELECT count(*), count(*) * 1024 FROM recipient WHERE rdomain = 'tset.nrte.240d'").fetchone()
    assert got == want, (got, want)
    con.close()


def timed(cmd, env):
    t = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, timeout=120)
    dt = time.perf_counter() - t
    if p.returncode not in (0, 1, 2):  # check's Nagios statuses are answers too
        sys.exit("%s failed (%d): %s" % (" ".join(cmd), p.returncode, p.stderr.decode()))
    return dt * 1000


def measure(relayd, etrnctl, n, reps):
    work = tempfile.mkdtemp(prefix="relayd-oplat.")
    try:
        db = os.path.join(work, "queue.db")
        conf = os.path.join(work, "relayd.conf")
        log = os.path.join(work, "relayd.log")
        sock = os.path.join(work, "control.sock")
        with open(conf, "w") as fh:
            fh.write("hostname = relay.bench.test\nlisten = 127.0.0.1:%d\ndatabase = %s\n"
                     "dns_servers = 127.0.0.1:1\ncontrol_socket = %s\nlog_level = info\n"
                     % (free_port(), db, sock))
            for i in range(100):
                fh.write("[domain d%03d.etrn.test]\nmode = hold\nroute = 127.0.0.1:9\n" % i)
        p, _, _ = start(relayd, conf, log)  # creates the schema
        stop(p)
        t0 = time.monotonic()
        fill(db, n)
        filled = time.monotonic() - t0
        ready, check = [], []
        for _ in range(3):
            p, dt, off = start(relayd, conf, log)
            ready.append(dt * 1000)
            check.append(wait_check(log, off))
            stop(p)
        p, _, off = start(relayd, conf, log)
        env = dict(os.environ, ETRNCTL_SOCKET=sock)
        out = {"ready_ms": statistics.median(ready), "quick_check_s": statistics.median(check)}
        try:
            wait_check(log, off)
            for cmd in ("summary", "domains", "stats", "check"):
                out[cmd + "_ms"] = statistics.median(timed([etrnctl, cmd], env) for _ in range(reps))
            out["check_deep_ms"] = timed([etrnctl, "check", "--deep"], env)
        finally:
            stop(p)
        return filled, out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    here = os.path.dirname(__file__)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--relayd", default=os.path.join(here, "..", "_build", "relayd", "relayd"))
    ap.add_argument("--etrnctl", default=os.path.join(here, "..", "_build", "etrnctl", "etrnctl"))
    ap.add_argument("-n", type=int, action="append", help="queue size (repeatable)")
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    for n in a.n or [20000, 100000, 1000000]:
        filled, out = measure(os.path.abspath(a.relayd), os.path.abspath(a.etrnctl), n, a.reps)
        print("queued=%d filled_in=%.1fs %s" % (n, filled, " ".join(
            "%s=%.1f" % (k, v) for k, v in out.items())))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
