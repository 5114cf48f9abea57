#!/usr/bin/env python3
"""Memory per idle SMTP connection: relayd against Postfix (issue 7).

Opens --conns connections (default 2000) to the server, reads the greeting
and sends EHLO on each (so every session has been set up and answered),
then leaves them idle and measures:

  relayd   VmRSS and PSS of its one process, before and with the connections
  postfix  a private instance (the shared harness's pf-instance.sh,
           ETRN_README's configuration; default_process_limit raised so
           every connection gets its smtpd): sum of PSS and of RSS of the
           smtpd processes, and of the whole instance, before and with them

and prints one RESULT line per target with the growth per connection.
relayd's max_connections and max_connections_per_ip are raised above
--conns (all connections come from 127.0.0.1). The script raises its own
open-file limit (inherited by what it starts).

Loopback only, kernel-picked ports; stops only the processes it started
(relayd by PID, Postfix through pf-instance.sh stop, i.e. its master's PID).

    bench/idle-connections.py                      # both targets, 2000 connections
    bench/idle-connections.py --target relayd --conns 2000
"""
import argparse
import os
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PF_INSTANCE = os.environ.get("PF_INSTANCE") or next(
    (p for p in (os.path.join(ROOT, "..", "shared", "bench", "postfix", "pf-instance.sh"),
                 "/work/shared/bench/postfix/pf-instance.sh") if os.access(p, os.X_OK)),
    os.path.join(ROOT, "..", "shared", "bench", "postfix", "pf-instance.sh"))


def relayd_binary():
    env = os.environ.get("RELAYD_BIN")
    if env:
        return env
    for d in ("_build", "_b", "."):
        p = os.path.join(ROOT, d, "relayd", "relayd")
        if os.access(p, os.X_OK):
            return p
    sys.exit("idle-connections: no relayd binary (build into _build/ or set RELAYD_BIN)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mem_kib(pid):
    """(RSS, PSS) of one process in KiB, (0, 0) if it is gone."""
    rss = pss = 0
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def procs_of_session(sid):
    """{pid: comm} of the live processes of session sid."""
    out = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % p) as f:
                s = f.read()
        except OSError:
            continue
        comm = s[s.index("(") + 1:s.rindex(")")]
        rest = s.rsplit(")", 1)[1].split()
        if rest[0] not in ("Z", "X") and int(rest[3]) == sid:
            out[int(p)] = comm
    return out


def tree(sid, only=None):
    """(count, RSS sum, PSS sum) over session sid, or its processes named only."""
    n = rss = pss = 0
    for pid, comm in procs_of_session(sid).items():
        if only and comm != only:
            continue
        r, p = mem_kib(pid)
        n, rss, pss = n + 1, rss + r, pss + p
    return n, rss, pss


def open_idle(port, n, timeout):
    """n connections, each greeted and EHLO answered; returns the sockets."""
    socks, sel = [], selectors.DefaultSelector()
    state = {}
    deadline = time.monotonic() + timeout
    pending = n
    opened = 0
    while (opened < n or pending) and time.monotonic() < deadline:
        # keep at most 100 handshakes in flight: the listen backlog is finite
        while opened < n and len(state) < 100:
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            state[s] = [b"", 0]  # buffer, stage (0 greeting, 1 EHLO)
            sel.register(s, selectors.EVENT_READ)
            socks.append(s)
            opened += 1
        for key, _ in sel.select(0.5):
            s = key.fileobj
            try:
                data = s.recv(4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as e:
                sys.exit("idle-connections: connection %d failed: %s" % (len(socks), e))
            if not data:
                sys.exit("idle-connections: the server closed a connection during setup "
                         "(after %d of %d)" % (n - pending, n))
            st = state[s]
            st[0] += data
            lines = st[0].split(b"\r\n")
            last = lines[-2] if len(lines) >= 2 else b""
            if len(last) < 4 or last[3:4] == b"-":
                continue  # reply not complete yet
            if not last.startswith(b"2"):
                sys.exit("idle-connections: server answered %r" % last)
            st[0] = b""
            if st[1] == 0:
                st[1] = 1
                s.setblocking(True)
                s.sendall(b"EHLO idle.bench.test\r\n")
                s.setblocking(False)
            else:
                sel.unregister(s)
                del state[s]
                pending -= 1
    if pending or opened < n:
        sys.exit("idle-connections: only %d of %d connections set up within %d s" % (n - pending, n, timeout))
    return socks


def close_all(socks):
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


def run_relayd(a, d):
    port = free_port()
    conf, log = os.path.join(d, "relayd.conf"), os.path.join(d, "relayd.log")
    with open(conf, "w") as f:
        f.write("hostname = relay.bench.test\nlisten = 127.0.0.1:%d\ndatabase = %s\n"
                "control_socket = %s\ndns_servers = 127.0.0.1:1\nlog_level = info\n"
                "max_connections = %d\nmax_connections_per_ip = %d\n"
                "\n[domain idle.bench.test]\nmode = hold\nroute = 127.0.0.1:9\n"
                % (port, os.path.join(d, "queue.db"), os.path.join(d, "control.sock"),
                   a.conns + 100, a.conns + 100))
    logf = open(log, "ab")
    p = subprocess.Popen([relayd_binary(), "-d", "-f", conf], stdin=subprocess.DEVNULL, stdout=logf,
                         stderr=logf)
    logf.close()
    try:
        deadline = time.monotonic() + 30
        while True:
            with open(log, "rb") as f:
                if b"relayd ready" in f.read():
                    break
            if p.poll() is not None or time.monotonic() > deadline:
                sys.exit("idle-connections: relayd did not start; see %s" % log)
            time.sleep(0.05)
        # one session first, so the figures below hold per-connection state
        # only, not whatever the first session allocates once
        close_all(open_idle(port, 1, 30))
        time.sleep(1.0)
        rss0, pss0 = mem_kib(p.pid)
        t = time.monotonic()
        socks = open_idle(port, a.conns, 300)
        setup = time.monotonic() - t
        time.sleep(a.settle)
        rss1, pss1 = mem_kib(p.pid)
        if p.poll() is not None:
            sys.exit("idle-connections: relayd died with the connections open")
        close_all(socks)
        print("relayd: %d idle connections set up in %.1f s; RSS %.1f -> %.1f MiB, PSS %.1f -> %.1f MiB"
              % (a.conns, setup, rss0 / 1024, rss1 / 1024, pss0 / 1024, pss1 / 1024))
        print("RESULT target=relayd conns=%d rss_before_kib=%d rss_with_kib=%d pss_before_kib=%d "
              "pss_with_kib=%d rss_per_conn_kib=%.1f pss_per_conn_kib=%.1f processes=1"
              % (a.conns, rss0, rss1, pss0, pss1, (rss1 - rss0) / a.conns, (pss1 - pss0) / a.conns))
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def run_postfix(a, d):
    port = free_port()
    pfdir = os.path.join(d, "pf")
    env = dict(os.environ, PF_LISTEN="127.0.0.1:%d" % port, PF_NEXTHOP="[127.0.0.1]:9",
               PF_EXTRA_MAIN="default_process_limit = %d\nsmtpd_client_connection_count_limit = 0"
               % (a.conns + 100))

    def pf(verb, *args, check=True):
        return subprocess.run([PF_INSTANCE, verb, pfdir] + list(args), env=env, check=check,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)

    os.chmod(d, 0o711)
    doms = os.path.join(d, "domains")
    with open(doms, "w") as f:
        f.write("idle.bench.test\n")
    pf("setup", doms)
    try:
        pf("start")
        sid = int(pf("pids").stdout.decode().split()[0])
        close_all(open_idle(port, 1, 30))
        time.sleep(1.0)
        n0, rss0, pss0 = tree(sid)
        s0 = tree(sid, "smtpd")
        t = time.monotonic()
        socks = open_idle(port, a.conns, 600)
        setup = time.monotonic() - t
        time.sleep(a.settle)
        n1, rss1, pss1 = tree(sid)
        s1 = tree(sid, "smtpd")
        close_all(socks)
        print("postfix: %d idle connections set up in %.1f s; processes %d -> %d (smtpd %d -> %d); "
              "instance RSS %.1f -> %.1f MiB, PSS %.1f -> %.1f MiB; smtpd PSS %.1f -> %.1f MiB"
              % (a.conns, setup, n0, n1, s0[0], s1[0], rss0 / 1024, rss1 / 1024, pss0 / 1024,
                 pss1 / 1024, s0[2] / 1024, s1[2] / 1024))
        print("RESULT target=postfix conns=%d smtpd=%d smtpd_pss_kib=%d smtpd_rss_kib=%d "
              "pss_before_kib=%d pss_with_kib=%d rss_before_kib=%d rss_with_kib=%d "
              "smtpd_pss_per_conn_kib=%.1f pss_per_conn_kib=%.1f rss_per_conn_kib=%.1f processes=%d"
              % (a.conns, s1[0], s1[2], s1[1], pss0, pss1, rss0, rss1, s1[2] / a.conns,
                 (pss1 - pss0) / a.conns, (rss1 - rss0) / a.conns, n1))
    finally:
        pf("stop", check=False)
        pf("teardown", check=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", choices=("relayd", "postfix", "both"), default="both")
    ap.add_argument("--conns", type=int, default=2000)
    ap.add_argument("--settle", type=float, default=2.0, help="seconds idle before measuring")
    a = ap.parse_args()
    if not 1 <= a.conns <= 20000:
        sys.exit("idle-connections: --conns 1..20000")
    want = a.conns * 2 + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(want, soft), hard), hard))
    for t in (("relayd", "postfix") if a.target == "both" else (a.target,)):
        d = tempfile.mkdtemp(prefix="idle-conns-")
        try:
            (run_relayd if t == "relayd" else run_postfix)(a, d)
        finally:
            shutil.rmtree(d, ignore_errors=True)
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
