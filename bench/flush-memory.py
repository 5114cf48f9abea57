#!/usr/bin/env python3
# flush-memory: peak RSS growth of relayd while it flushes DOMAINS domains x
# MESSAGES messages of SIZE bytes to sites that accept the connection and
# never greet (issue 7: a delivery run holds a bounded number of bytes, not
# messages; the bound asked for is 64 MiB for 20 x 10 x 5 MB).
#
# It starts relayd (the build's, or $RELAYD_BIN) in a temporary directory
# with one hold domain per site, queues the messages over SMTP, restarts
# relayd (so the peak RSS of the intake does not count), reads VmHWM, sends
# ETRN for every domain, waits until every site holds as many connections
# as relayd will open to it (max_site_connections; a connection is opened
# only once its run's fetch has come back) and then for SETTLE seconds, and
# reads VmHWM again. Prints one RESULT line. Loopback only; stops only the
# relayd it started (by PID) and closes only its own sockets.
#
# --target postfix does the same with a private Postfix instance set up by
# the shared harness's pf-instance.sh (../shared/bench/postfix/, Postfix's
# ETRN_README configuration; root and the postfix package needed), each
# domain routed to its own stalled site. Postfix is many processes, so its
# figure is the growth of the peak sum of RSS (and of PSS, shared pages split
# between processes) over its master's session, sampled every 0.1 s from
# before the ETRNs until SETTLE seconds after every site holds a connection.
#
#   bench/flush-memory.py [--target relayd|postfix] [--domains 20] [--messages 10]
#                         [--size 5M] [--settle 5] [--keep DIR]

import argparse
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def relayd_binary():
    env = os.environ.get("RELAYD_BIN")
    if env:
        return env
    for d in ("_build", "_b", "."):
        p = os.path.join(ROOT, d, "relayd", "relayd")
        if os.access(p, os.X_OK):
            return p
    sys.exit("flush-memory: no relayd binary (build into _build/ or set RELAYD_BIN)")


def size_arg(s):
    mult = {"K": 1024, "M": 1024 * 1024}.get(s[-1:].upper(), 1)
    return int(s[:-1] if mult > 1 else s) * mult


class StalledSite:
    """Accepts connections and never says a word; counts what it holds."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.conns.append(c)

    def close(self):
        self.stop.set()
        self.thread.join(5)
        for c in self.conns:
            c.close()
        self.sock.close()


def vm_kib(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError("no %s for pid %d" % (key, pid))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Relayd:
    def __init__(self, d, sites, max_size, conns):
        self.dir = d
        self.port = free_port()
        self.conf = os.path.join(d, "relayd.conf")
        self.log = os.path.join(d, "relayd.log")
        self.proc = None
        lines = [
            "hostname = relay.bench.test",
            "listen = 127.0.0.1:%d" % self.port,
            "database = %s" % os.path.join(d, "queue.db"),
            "control_socket = %s" % os.path.join(d, "control.sock"),
            "dns_servers = 127.0.0.1:1",
            "max_message_size = %d" % max_size,
            "max_site_connections = %d" % conns,
            "etrn_rate = 1000/1m",
            "log_level = info",
        ]
        for name, site in sites:
            lines += ["", "[domain %s]" % name, "mode = hold", "route = 127.0.0.1:%d" % site.port]
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    def start(self):
        logf = open(self.log, "ab")
        start = os.path.getsize(self.log)
        self.proc = subprocess.Popen([relayd_binary(), "-d", "-f", self.conf], stdin=subprocess.DEVNULL,
                                     stdout=logf, stderr=logf, start_new_session=True)
        logf.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with open(self.log, "rb") as f:
                f.seek(start)
                if b"relayd ready" in f.read():
                    return
            if self.proc.poll() is not None:
                sys.exit("flush-memory: relayd exited (%s); see %s" % (self.proc.returncode, self.log))
            time.sleep(0.05)
        sys.exit("flush-memory: relayd not ready within 30 s")

    def stop(self):
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


PF_INSTANCE = os.environ.get("PF_INSTANCE") or os.path.join(ROOT, "..", "shared", "bench", "postfix", "pf-instance.sh")


def session_pids(sid):
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % p) as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if rest[0] not in ("Z", "X") and int(rest[3]) == sid:
            out.append(int(p))
    return out


def tree_kib(sid):
    """(sum of RSS, sum of PSS) in KiB over the processes of session sid."""
    rss = pss = 0
    for pid in session_pids(sid):
        try:
            with open("/proc/%d/smaps_rollup" % pid) as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except OSError:
            continue
    return rss, pss


class Postfix:
    """A private Postfix instance through the shared harness's pf-instance.sh."""

    def __init__(self, d, sites, max_size, conns):
        self.dir = os.path.join(d, "pf")
        self.port = free_port()
        self.env = dict(os.environ, PF_LISTEN="127.0.0.1:%d" % self.port,
                        PF_NEXTHOP="[127.0.0.1]:%d" % sites[0][1].port,
                        PF_EXTRA_MAIN="message_size_limit = %d" % max_size)
        os.chmod(d, 0o711)
        doms = os.path.join(d, "domains")
        with open(doms, "w") as f:
            f.write("".join(name + "\n" for name, _ in sites))
        self.pf("setup", doms)
        etc = os.path.join(self.dir, "etc")
        with open(os.path.join(etc, "transport"), "w") as f:
            for name, site in sites:
                f.write("%s\tetrn-only:[127.0.0.1]:%d\n" % (name, site.port))
        subprocess.run(["touch", "-d", "-5 seconds", os.path.join(etc, "transport")], check=True)
        subprocess.run(["postmap", "-c", etc, "hash:" + os.path.join(etc, "transport")], check=True)
        self.sid = None

    def pf(self, verb, *args, check=True):
        return subprocess.run([PF_INSTANCE, verb, self.dir] + list(args), env=self.env, check=check,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)

    def start(self):
        self.pf("start")
        self.sid = int(self.pf("pids").stdout.decode().split()[0])

    def settled(self, n):
        return self.pf("settled", str(n), check=False).returncode == 0

    def stop(self):
        self.pf("stop", check=False)

    def teardown(self):
        self.pf("teardown", check=False)


def run_postfix(a, d, sites):
    pf = Postfix(d, sites, max(a.size * 2, 1 << 20), a.conns)
    try:
        pf.start()
        t0 = time.monotonic()
        s = smtplib.SMTP("127.0.0.1", pf.port, local_hostname="bench.test", timeout=120)
        for name, _ in sites:
            for i in range(a.messages):
                s.sendmail("s@sender.test", ["u%d@%s" % (i, name)], body("%s-%d" % (name, i), a.size))
        s.quit()
        n = a.domains * a.messages
        deadline = time.monotonic() + 300
        while not pf.settled(n):
            if time.monotonic() > deadline:
                sys.exit("flush-memory: Postfix did not park %d messages within 300 s" % n)
            time.sleep(0.5)
        queued = n * a.size
        print("queued %d messages, %.0f MiB, in %.1f s" % (n, queued / 2**20, time.monotonic() - t0))
        time.sleep(1.0)
        rss0, pss0 = tree_kib(pf.sid)
        peak_rss, peak_pss = rss0, pss0
        e = smtplib.SMTP("127.0.0.1", pf.port, local_hostname="site.bench.test", timeout=60)
        e.ehlo()
        for name, _ in sites:
            code, text = e.docmd("ETRN", name)
            if code not in (250, 251, 252, 253):
                sys.exit("flush-memory: ETRN %s -> %d %s" % (name, code, text))
        e.quit()
        deadline = time.monotonic() + 120
        settle_end = None
        while settle_end is None or time.monotonic() < settle_end:
            rss, pss = tree_kib(pf.sid)
            peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
            if settle_end is None and all(site.conns for _, site in sites):
                settle_end = time.monotonic() + a.settle
            if settle_end is None and time.monotonic() > deadline:
                print("not every site got a connection within 120 s (%d of %d)" % (
                    sum(1 for _, site in sites if site.conns), len(sites)))
                settle_end = time.monotonic()
            time.sleep(0.1)
        print("process tree before ETRN: RSS %.1f MiB, PSS %.1f MiB; peak after: RSS %.1f MiB, PSS %.1f MiB"
              % (rss0 / 1024.0, pss0 / 1024.0, peak_rss / 1024.0, peak_pss / 1024.0))
        print("RESULT target=postfix metric=flush_peak_rss_growth_mib value=%.1f pss_growth_mib=%.1f"
              " domains=%d messages=%d size=%d queued_mib=%.0f" % (
                  (peak_rss - rss0) / 1024.0, (peak_pss - pss0) / 1024.0, a.domains, a.messages, a.size,
                  queued / 2**20))
        return 0
    finally:
        pf.teardown()


def body(uid, size):
    head = "From: s@sender.test\r\nTo: u@site\r\nSubject: %s\r\nMessage-ID: <%s@bench>\r\n\r\n" % (uid, uid)
    line = "y" * 76 + "\r\n"
    return (head + line * ((size - len(head)) // len(line))).encode()


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--domains", type=int, default=20)
    ap.add_argument("--messages", type=int, default=10, help="per domain")
    ap.add_argument("--size", type=size_arg, default=size_arg("5M"))
    ap.add_argument("--settle", type=float, default=5.0, help="seconds to wait once connected")
    ap.add_argument("--conns", type=int, default=2, help="max_site_connections")
    ap.add_argument("--keep", help="work in DIR and keep it")
    ap.add_argument("--target", choices=("relayd", "postfix"), default="relayd")
    a = ap.parse_args()

    d = a.keep or tempfile.mkdtemp(prefix="flush-memory-")
    os.makedirs(d, exist_ok=True)
    sites = [("d%02d.flush.test" % i, StalledSite()) for i in range(a.domains)]
    if a.target == "postfix":
        try:
            return run_postfix(a, d, sites)
        finally:
            for _, site in sites:
                site.close()
            if not a.keep:
                shutil.rmtree(d, ignore_errors=True)
    r = Relayd(d, sites, max(a.size * 2, 1 << 20), a.conns)
    try:
        r.start()
        t0 = time.monotonic()
        s = smtplib.SMTP("127.0.0.1", r.port, local_hostname="bench.test", timeout=120)
        for name, _ in sites:
            for i in range(a.messages):
                s.sendmail("s@sender.test", ["u%d@%s" % (i, name)], body("%s-%d" % (name, i), a.size))
        s.quit()
        queued = a.domains * a.messages * a.size
        print("queued %d messages, %.0f MiB, in %.1f s" % (a.domains * a.messages, queued / 2**20,
                                                         time.monotonic() - t0))
        r.stop()
        r.start()
        time.sleep(1.0)
        before = vm_kib(r.proc.pid, "VmHWM")
        e = smtplib.SMTP("127.0.0.1", r.port, local_hostname="site.bench.test", timeout=60)
        e.ehlo()
        for name, _ in sites:
            code, text = e.docmd("ETRN", name)
            if code not in (250, 251, 252, 253):
                sys.exit("flush-memory: ETRN %s -> %d %s" % (name, code, text))
        e.quit()
        deadline = time.monotonic() + 60
        want = min(a.conns, 1)  # relayd probes a site that has not answered with one connection
        while any(len(site.conns) < want for _, site in sites):
            if time.monotonic() > deadline:
                sys.exit("flush-memory: not every site got a connection within 60 s")
            time.sleep(0.1)
        time.sleep(a.settle)
        after = vm_kib(r.proc.pid, "VmHWM")
        rss = vm_kib(r.proc.pid, "VmRSS")
        grown = (after - before) / 1024.0
        print("VmHWM before ETRN %.1f MiB, after %.1f MiB (VmRSS now %.1f MiB)" % (before / 1024.0, after / 1024.0,
                                                                                   rss / 1024.0))
        print("RESULT target=relayd metric=flush_peak_rss_growth_mib value=%.1f domains=%d messages=%d size=%d"
              " queued_mib=%.0f limit_mib=64 %s" % (grown, a.domains, a.messages, a.size, queued / 2**20,
                                                    "ok" if grown <= 64 else "OVER"))
        return 0 if grown <= 64 else 1
    finally:
        r.stop()
        for _, site in sites:
            site.close()
        if not a.keep:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
