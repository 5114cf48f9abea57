#!/usr/bin/env python3
# atrn-pull: how fast a site collects its queue with ATRN through etrnctl atrn
# (RFC 2645: the relay delivers down the customer's own connection, etrnctl
# hands every message to the site's MTA and answers the relay with what it
# said), beside an ETRN flush of the same queue on one connection. Postfix's
# smtp-sink plays the site's MTA in both runs; relayd, the sink and the
# injection all run on 127.0.0.1. Everything it starts it stops, by PID.
#
#   python3 bench/atrn-pull.py [-n 10000] [--size 4096] [--reps 1] [--fetchmail]
#
# --fetchmail adds a third pull of the same queue per repetition: fetchmail's
# ODMR client (--protocol ODMR, AUTH CRAM-MD5, smtphost = the sink), which
# relays the turned-round session to the site's MTA as a byte pump.
#
# RELAYD_BIN / ETRNCTL_BIN override the binaries (default: _build/, then _b/,
# relative to the project root). Build them without sanitizers.

import argparse
import os
import shutil
import signal
import socket
import smtplib
import sqlite3
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def binary(env, rel):
    if os.environ.get(env):
        return os.environ[env]
    for d in ("_build", "_b"):
        p = os.path.join(ROOT, d, rel)
        if os.access(p, os.X_OK):
            return p
    sys.exit("atrn-pull: no %s (build it, or set %s)" % (rel, env))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit("atrn-pull: nothing answers on port %d" % port)


def queued(db):
    c = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=10)
    try:
        return c.execute("SELECT count(*) FROM recipient").fetchone()[0]
    finally:
        c.close()


def inject(port, n, size):
    # one recipient per message, 20 sessions at once, as the ETRN benchmark
    subprocess.run(["smtp-source", "-s", "20", "-m", str(n), "-l", str(size), "-c",
                    "-f", "sender@bench.test", "-t", "user@pull.test", "127.0.0.1:%d" % port],
                   check=True, stdout=subprocess.DEVNULL, timeout=600)


def wait_empty(db, timeout=600):
    end = time.monotonic() + timeout
    while queued(db) > 0:
        if time.monotonic() > end:
            sys.exit("atrn-pull: the queue did not drain")
        time.sleep(0.05)
    return time.monotonic()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=10000, help="messages (default 10000)")
    ap.add_argument("--size", type=int, default=4096, help="body bytes (default 4096)")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--fetchmail", action="store_true", help="also pull with fetchmail's ODMR client")
    a = ap.parse_args()
    if a.fetchmail and shutil.which("fetchmail") is None:
        sys.exit("atrn-pull: fetchmail not found (Debian package fetchmail)")
    relayd, etrnctl = binary("RELAYD_BIN", "relayd/relayd"), binary("ETRNCTL_BIN", "etrnctl/etrnctl")
    for tool in ("smtp-source", "smtp-sink"):
        if shutil.which(tool) is None:
            sys.exit("atrn-pull: %s not found (Debian package postfix)" % tool)
    tmp = tempfile.mkdtemp(prefix="atrn-pull-")
    procs = []
    try:
        sink_port, smtp_port, odmr_port = free_port(), free_port(), free_port()
        # the site's MTA: answers everything, stores nothing (as in the ETRN benchmark)
        sink = subprocess.Popen(["smtp-sink", "-u", "nobody", "127.0.0.1:%d" % sink_port, "1000"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(sink)
        with open(os.path.join(tmp, "credentials"), "w") as f:
            f.write("bench:{plain}bench-secret:pull.test\n")
        os.chmod(os.path.join(tmp, "credentials"), 0o600)
        with open(os.path.join(tmp, "password"), "w") as f:
            f.write("bench-secret\n")
        db = os.path.join(tmp, "queue.db")
        with open(os.path.join(tmp, "relayd.conf"), "w") as f:
            f.write("hostname = relay.bench\nlisten = 127.0.0.1:%d\nodmr_listen = 127.0.0.1:%d\n"
                    "database = %s\ncontrol_socket =\ndns_servers = 127.0.0.1:1\n"
                    "credentials = %s/credentials\nlog_level = warn\nmax_connections_per_ip = 100\n"
                    "[domain pull.test]\nroute = 127.0.0.1:%d\nmax_site_connections = 1\n"
                    % (smtp_port, odmr_port, db, tmp, sink_port))
        log = open(os.path.join(tmp, "relayd.log"), "w")
        rd = subprocess.Popen([relayd, "-d", "-f", os.path.join(tmp, "relayd.conf")], stdout=log,
                              stderr=log)
        procs.append(rd)
        wait_port(smtp_port)
        wait_port(sink_port)
        print("atrn-pull: %d messages of %d bytes, one domain, smtp-sink as the site, "
              "one connection each way" % (a.n, a.size))
        etrn_rates, atrn_rates, fm_rates = [], [], []
        fmrc, fmhome = os.path.join(tmp, "fetchmailrc"), os.path.join(tmp, "fmhome")
        with open(fmrc, "w") as f:
            f.write('poll 127.0.0.1 port %d protocol ODMR auth cram-md5 user "bench" '
                    'password "bench-secret"\n  fetchdomains pull.test smtphost 127.0.0.1/%d\n'
                    % (odmr_port, sink_port))
        os.chmod(fmrc, 0o600)
        os.mkdir(fmhome)
        for rep in range(a.reps):
            inject(smtp_port, a.n, a.size)
            assert queued(db) == a.n, queued(db)
            s = smtplib.SMTP("127.0.0.1", smtp_port, local_hostname="site.bench")
            s.ehlo()
            t0 = time.monotonic()
            code, _ = s.docmd("ETRN", "pull.test")
            s.quit()
            assert code in (250, 253), code
            t1 = wait_empty(db)
            etrn_rates.append(a.n / (t1 - t0))

            inject(smtp_port, a.n, a.size)
            assert queued(db) == a.n, queued(db)
            t0 = time.monotonic()
            p = subprocess.run([etrnctl, "atrn", "-q", "-H", "127.0.0.1:%d" % odmr_port, "--user",
                                "bench", "--password-file", os.path.join(tmp, "password"),
                                "--deliver-to", "127.0.0.1:%d" % sink_port, "pull.test"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=900,
                               env=dict(os.environ, ETRNCTL_DEFAULTS="/dev/null"))
            t1 = wait_empty(db)  # committed on the relay, not only handed over
            assert p.returncode == 0, p.stderr
            atrn_rates.append(a.n / (t1 - t0))
            print("rep %d: ETRN flush %.0f msg/s, ATRN pull via etrnctl %.0f msg/s (%.0f %%)"
                  % (rep + 1, etrn_rates[-1], atrn_rates[-1], 100 * atrn_rates[-1] / etrn_rates[-1]))
            if a.fetchmail:
                inject(smtp_port, a.n, a.size)
                assert queued(db) == a.n, queued(db)
                t0 = time.monotonic()
                # exit 1 is fetchmail's "no mail" after an ODMR pump
                p = subprocess.run(["fetchmail", "-f", fmrc, "--nosyslog", "--nodetach"],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=900,
                                   env=dict(os.environ, HOME=fmhome, FETCHMAILHOME=fmhome))
                t1 = wait_empty(db, timeout=60)
                assert p.returncode in (0, 1), p.stdout
                fm_rates.append(a.n / (t1 - t0))
                print("rep %d: ATRN pull via fetchmail %.0f msg/s (%.0f %% of the ETRN flush)"
                      % (rep + 1, fm_rates[-1], 100 * fm_rates[-1] / etrn_rates[-1]))
        e, t = sorted(etrn_rates)[len(etrn_rates) // 2], sorted(atrn_rates)[len(atrn_rates) // 2]
        print("RESULT etrn_flush_rate=%.0f atrn_pull_rate=%.0f ratio=%.2f" % (e, t, t / e))
        if fm_rates:
            fm = sorted(fm_rates)[len(fm_rates) // 2]
            print("RESULT fetchmail_odmr_rate=%.0f ratio_to_etrn=%.2f ratio_to_etrnctl=%.2f"
                  % (fm, fm / e, fm / t))
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
