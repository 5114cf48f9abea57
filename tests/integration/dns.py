# dns: a real resolver for the route = mx tests. Starts dnsmasq in the
# foreground on 127.0.0.1:PORT with only the records a test gives it (MX,
# host addresses, raw records such as a null MX) and nothing else: no
# /etc/resolv.conf, no /etc/hosts, no upstream. It is stopped by its own PID.
# query() is a minimal stub resolver used to wait until dnsmasq answers and
# to check what it serves.

import os
import random
import socket
import struct
import subprocess
import time

from relayd_fixture import free_port

DNSMASQ = "/usr/sbin/dnsmasq"

TYPE_A, TYPE_MX, TYPE_AAAA = 1, 15, 28


def _encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def _decode_name(msg, off):
    labels = []
    jumped = False
    end = off
    for _ in range(128):  # bounded: no pointer loops
        n = msg[off]
        if n == 0:
            off += 1
            break
        if n & 0xC0 == 0xC0:
            ptr = struct.unpack("!H", msg[off : off + 2])[0] & 0x3FFF
            if not jumped:
                end = off + 2
            jumped = True
            off = ptr
            continue
        labels.append(msg[off + 1 : off + 1 + n].decode())
        off += 1 + n
    if not jumped:
        end = off
    return ".".join(labels), end


def query(port, name, qtype, host="127.0.0.1", timeout=1.0):
    """Ask host:port once over UDP. Returns (rcode, [answers]) where an MX answer
    is (pref, target) (target '' for the root, a null MX), an A/AAAA answer the
    address text, anything else the raw rdata."""
    qid = random.randrange(65536)
    msg = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + _encode_name(name) + struct.pack("!HH", qtype, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(msg, (host, port))
        while True:
            data, _ = s.recvfrom(4096)
            if struct.unpack("!H", data[:2])[0] == qid:
                break
    flags, qd, an = struct.unpack("!HHH", data[2:8])
    rcode = flags & 0xF
    off = 12
    for _ in range(qd):
        _, off = _decode_name(data, off)
        off += 4
    answers = []
    for _ in range(an):
        _, off = _decode_name(data, off)
        rtype, _, _, rdlen = struct.unpack("!HHIH", data[off : off + 10])
        off += 10
        rdata = data[off : off + rdlen]
        if rtype == TYPE_MX and rtype == qtype:
            pref = struct.unpack("!H", rdata[:2])[0]
            target, _ = _decode_name(data, off + 2)
            answers.append((pref, target))
        elif rtype == TYPE_A and rtype == qtype:
            answers.append(socket.inet_ntop(socket.AF_INET, rdata))
        elif rtype == TYPE_AAAA and rtype == qtype:
            answers.append(socket.inet_ntop(socket.AF_INET6, rdata))
        elif rtype == qtype:
            answers.append(rdata)
        off += rdlen
    return rcode, answers


class Dnsmasq:
    """dnsmasq serving exactly the given records.

    mx:    [(domain, host, pref)]           -> mx-host=domain,host,pref
    hosts: {name: address or [addresses]}   -> host-record=name,addr...
    null_mx: [domain]                       -> a "0 ." MX (RFC 7505) as a raw record
    """

    def __init__(self, workdir, mx=(), hosts=None, null_mx=(), port=None):
        self.dir = workdir
        os.makedirs(self.dir, exist_ok=True)
        self.conf = os.path.join(self.dir, "dnsmasq.conf")
        self.logfile = os.path.join(self.dir, "dnsmasq.log")
        self.mx = list(mx)
        self.hosts = dict(hosts or {})
        self.null_mx = list(null_mx)
        self.port = port
        self.proc = None

    @property
    def server(self):
        """The value for relayd's dns_servers."""
        return "127.0.0.1:%d" % self.port

    def config_text(self):
        lines = ["# written by the relayd integration tests"]
        # answer every name under the test TLDs from these records only:
        # NXDOMAIN / no data instead of REFUSED (no upstream to ask)
        names = [d for d, _, _ in self.mx] + [h for _, h, _ in self.mx] + list(self.hosts) + self.null_mx
        for tld in sorted({n.rstrip(".").rsplit(".", 1)[-1] for n in names} | {"test"}):
            lines.append("local=/%s/" % tld)
        for dom, host, pref in self.mx:
            lines.append("mx-host=%s,%s,%d" % (dom, host, pref))
        for name, addrs in self.hosts.items():
            if isinstance(addrs, str):
                addrs = [addrs]
            # one line per address: a host-record holds at most one IPv4 and
            # one IPv6 address (the last of each would win); lines add up
            for a in addrs:
                lines.append("host-record=%s,%s" % (name, a))
        for dom in self.null_mx:
            # dnsmasq's mx-host always names a host; a null MX is preference 0
            # and the root as the exchange: rdata 00 00 00, served as a raw RR.
            lines.append("dns-rr=%s,15,000000" % dom)
        return "\n".join(lines) + "\n"

    def start(self, timeout=10):
        assert self.proc is None
        with open(self.conf, "w") as f:
            f.write(self.config_text())
        for attempt in range(5):
            if self.port is None or attempt > 0:
                self.port = free_port()
            log = open(self.logfile, "ab")
            try:
                self.proc = subprocess.Popen(
                    [DNSMASQ, "--no-daemon", "--no-resolv", "--no-hosts", "--no-poll",
                     "--port=%d" % self.port, "--listen-address=127.0.0.1", "--bind-interfaces",
                     "--conf-file=" + self.conf, "--pid-file", "--user=root", "--group=root",
                     "--log-queries", "--log-facility=-", "--cache-size=0"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                )
            finally:
                log.close()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    query(self.port, "ready.test", TYPE_A, timeout=0.2)
                    return self
                except (socket.timeout, ConnectionRefusedError, OSError):
                    time.sleep(0.05)
            if self.proc.poll() is None:
                self.stop()
                raise AssertionError("dnsmasq did not answer within %ss:\n%s" % (timeout, self.log_text()))
            self.proc = None
            if "Address already in use" not in self.log_text():
                raise AssertionError("dnsmasq exited at start:\n%s" % self.log_text())
        raise AssertionError("dnsmasq could not bind a free port in 5 attempts")

    def log_text(self):
        try:
            with open(self.logfile, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stop(self):
        """SIGTERM to our dnsmasq (by PID), bounded wait, then SIGKILL."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
