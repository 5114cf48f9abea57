#!/usr/bin/env python3
"""ETRN latency with a large backlog for other domains (relayd alone).

Fills relayd's queue with N messages for 100 other domains straight through
SQLite (1 KiB bodies: the backlog's size matters to the index, not its
bytes; SMTP injection of 1,000,000 messages would take longer than the
measurement), starts relayd on it, queues 10 messages for a probe domain by
SMTP, then times ETRN -> reply, -> first and -> 10th message at a sink.
Loopback only; every process it starts is stopped by PID.

    bench/backlog-latency.py --relayd _build/relayd/relayd -n 20000 -n 100000 -n 1000000
"""
import argparse
import os
import shutil
import smtplib
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time

PROBE = "probe.etrn.test"


class Sink(threading.Thread):
    """A minimal SMTP server that timestamps the end of every message."""

    def __init__(self):
        super().__init__(daemon=True)
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(64)
        self.port = self.srv.getsockname()[1]
        self.times = []
        self.lock = threading.Lock()

    def run(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as smtp-sink does
            threading.Thread(target=self.session, args=(c,), daemon=True).start()

    def session(self, c):
        f = c.makefile("rb")
        c.sendall(b"220 sink ESMTP\r\n")
        data = False
        while True:
            line = f.readline()
            if not line:
                return
            if data:
                if line == b".\r\n":
                    with self.lock:
                        self.times.append(time.perf_counter())
                    data = False
                    c.sendall(b"250 2.0.0 ok\r\n")
                continue
            verb = line[:4].upper()
            if verb == b"EHLO":
                c.sendall(b"250-sink\r\n250 PIPELINING\r\n")
            elif verb == b"DATA":
                data = True
                c.sendall(b"354 go\r\n")
            elif verb == b"QUIT":
                c.sendall(b"221 bye\r\n")
                return
            else:
                c.sendall(b"250 ok\r\n")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def start(relayd, conf, log):
    off = os.path.getsize(log) if os.path.exists(log) else 0
    p = subprocess.Popen([relayd, "-d", "-f", conf], stderr=open(log, "ab"))
    t0 = time.monotonic()
    while time.monotonic() - t0 < 60:
        with open(log, "rb") as fh:
            fh.seek(off)
            if b"relayd ready" in fh.read():
                return p
        if p.poll() is not None:
            sys.exit("relayd exited: see %s" % log)
        time.sleep(0.05)
    p.kill()
    sys.exit("relayd not ready")


def stop(p):
    p.terminate()
    try:
        p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def fill(db, n):
    """n messages, one recipient each, over d000..d099.etrn.test."""
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")  # filling only; relayd opens it with FULL
    now = int(time.time())
    con.execute("BEGIN")
    con.execute(
        "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s WHERE i<?) "
        "INSERT INTO message(id, queue_id, arrival, sender, size, client_addr, client_helo) "
        "SELECT i, printf('BACKLOG%07d', i), ?, 'bench@src.test', 1024, '127.0.0.1', 'fill' FROM s",
        (n, now))
    con.execute("INSERT INTO message_body(message_id, data) SELECT id, zeroblob(1024) FROM message")
    con.execute(
        "INSERT INTO recipient(message_id, domain, rdomain, address) "
        "SELECT id, printf('d%03d.etrn.test', id % 100), "
        # rdomain is the domain reversed character by character (schema 002):
        # d042.etrn.test -> tset.nrte.240d
        "'tset.nrte.' || (id % 10) || ((id / 10) % 10) || '0d', "
        "printf('u%d@d%03d.etrn.test', id, id % 100) FROM message")
    con.execute("COMMIT")
    bad = con.execute("SELECT domain, rdomain FROM recipient WHERE id IN (1, 42, ?)", (n,)).fetchall()
    for domain, rdomain in bad:
        assert rdomain == domain[::-1], (domain, rdomain)
    con.close()


def measure(relayd, n, reps):
    work = tempfile.mkdtemp(prefix="relayd-backlog.")
    try:
        sink = Sink()
        sink.start()
        port = free_port()
        db = os.path.join(work, "queue.db")
        conf = os.path.join(work, "relayd.conf")
        log = os.path.join(work, "relayd.log")
        doms = ["d%03d.etrn.test" % i for i in range(100)] + [PROBE]
        with open(conf, "w") as fh:
            fh.write("hostname = relay.bench.test\nlisten = 127.0.0.1:%d\ndatabase = %s\n"
                     "dns_servers = 127.0.0.1:1\nmax_site_connections = 20\ncontrol_socket = %s/control.sock\n"
                     "etrn_rate = 1000/1m\nlog_level = info\n" % (port, db, work))
            for d in doms:
                fh.write("[domain %s]\nmode = hold\nroute = 127.0.0.1:%d\n" % (d, sink.port))
        p = start(relayd, conf, log)  # creates the schema
        stop(p)
        t0 = time.monotonic()
        fill(db, n)
        filled = time.monotonic() - t0
        p = start(relayd, conf, log)
        out = []
        try:
            for _ in range(reps):
                s = smtplib.SMTP("127.0.0.1", port)
                for i in range(10):
                    s.sendmail("bench@src.test", ["p%d@%s" % (i, PROBE)], b"Subject: probe\r\n\r\n" + b"x" * 4000)
                s.quit()
                time.sleep(1.0)
                with sink.lock:
                    base = len(sink.times)
                s = smtplib.SMTP("127.0.0.1", port)
                s.ehlo("bench")
                t = time.perf_counter()
                code, _ = s.docmd("ETRN", PROBE)
                reply = time.perf_counter() - t
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    with sink.lock:
                        if len(sink.times) >= base + 10:
                            break
                    time.sleep(0.001)
                with sink.lock:
                    got = sink.times[base:base + 10]
                s.quit()
                if code != 253 or len(got) < 10:
                    sys.exit("probe failed: ETRN %d, %d of 10 arrived (log %s)" % (code, len(got), log))
                out.append((reply * 1000, (got[0] - t) * 1000, (got[-1] - t) * 1000))
                time.sleep(0.5)
            left = sqlite3.connect("file:%s?mode=ro" % db, uri=True).execute(
                "SELECT count(*) FROM message").fetchone()[0]
        finally:
            stop(p)
        return filled, out, left
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--relayd", default=os.path.join(os.path.dirname(__file__), "..", "_build", "relayd", "relayd"))
    ap.add_argument("-n", type=int, action="append", help="backlog size (repeatable)")
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    for n in a.n or [20000, 100000, 1000000]:
        filled, out, left = measure(os.path.abspath(a.relayd), n, a.reps)
        med = [statistics.median(x[i] for x in out) for i in range(3)]
        print("backlog=%d filled_in=%.1fs reps=%d etrn_reply_ms=%.2f first_ms=%.2f tenth_ms=%.2f "
              "backlog_left=%d values=%s" % (n, filled, len(out), med[0], med[1], med[2], left,
                                              ";".join("%.2f/%.2f/%.2f" % x for x in out)))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
