# scripted_dns: a small authoritative DNS server for tests, on UDP and TCP
# of one loopback port, answering each query from a script, including the
# broken answers a real server (dnsmasq) will not send: SERVFAIL, REFUSED,
# no answer at all (a timeout), a record whose RDLENGTH is wrong, a record
# for another owner name, TC set even over TCP, and null MX (RFC 7505).
# It records every query it gets. Threads only; stopped by stop().
#
# The script maps a name (lower case, no trailing dot) to {qtype: answer}:
#   "MX":   [(pref, host), ...]   (host "" or "." is a null MX)
#   "A":    ["192.0.2.1", ...]    "AAAA": ["2001:db8::1", ...]
#   or, for any qtype, one of the strings SERVFAIL, REFUSED, NXDOMAIN,
#   NODATA, TIMEOUT (never answered), BAD_RDLENGTH (the first record of
#   the type with one byte too many), WRONG_OWNER (the records under
#   another owner name), TC (no records, TC set, over UDP and TCP alike).
# "*" as a qtype key answers every type not listed. A name not in the
# script is NXDOMAIN; a listed name without the asked type is NODATA (an
# SOA in the authority section gives the negative TTL). The script may be
# changed while the server runs (set()).

import socket
import struct
import threading

TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "MX": 15, "TXT": 16, "AAAA": 28}
TYPE_NAMES = {v: k for k, v in TYPES.items()}
RCODES = {"NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3, "NOTIMP": 4, "REFUSED": 5}
TTL = 60


def encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def decode_name(msg, off):
    """(name, offset after it), following compression pointers (bounded)."""
    labels = []
    end = None
    for _ in range(128):
        n = msg[off]
        if n == 0:
            off += 1
            break
        if n & 0xC0 == 0xC0:
            if end is None:
                end = off + 2
            off = struct.unpack("!H", msg[off : off + 2])[0] & 0x3FFF
            continue
        labels.append(msg[off + 1 : off + 1 + n].decode("ascii", "replace"))
        off += 1 + n
    return ".".join(labels), (end if end is not None else off)


def rr(owner, rtype, rdata, ttl=TTL):
    return encode_name(owner) + struct.pack("!HHIH", rtype, 1, ttl, len(rdata)) + rdata


def rdata_for(qtype, value):
    if qtype == TYPES["A"]:
        return socket.inet_pton(socket.AF_INET, value)
    if qtype == TYPES["AAAA"]:
        return socket.inet_pton(socket.AF_INET6, value)
    if qtype == TYPES["MX"]:
        pref, host = value
        return struct.pack("!H", pref) + encode_name("" if host in ("", ".") else host)
    raise ValueError("no rdata for type %d" % qtype)


class ScriptedDNS:
    def __init__(self, script=None, host="127.0.0.1", port=0):
        self.script = {k.lower().rstrip("."): dict(v) for k, v in (script or {}).items()}
        self.host = host
        self.port = port
        self.queries = []  # (name, type name, "udp"|"tcp")
        self.lock = threading.Lock()
        self.udp = None
        self.tcp = None
        self.threads = []

    @property
    def server(self):
        """The value for relayd's dns_servers."""
        return "%s:%d" % (self.host, self.port)

    def set(self, name, answers):
        with self.lock:
            self.script[name.lower().rstrip(".")] = dict(answers)

    def asked(self, name=None, qtype=None):
        with self.lock:
            return [q for q in self.queries
                    if (name is None or q[0] == name.lower()) and (qtype is None or q[1] == qtype)]

    # answers --------------------------------------------------------------------

    def answer(self, msg, proto):
        """The reply to one query message, or None to stay silent."""
        if len(msg) < 12:
            return None
        qid, flags, qd = struct.unpack("!HHH", msg[:6])
        if qd != 1 or flags & 0x8000:
            return None
        qname, off = decode_name(msg, 12)
        qtype, qclass = struct.unpack("!HH", msg[off : off + 4])
        question = msg[12 : off + 4]
        name = qname.lower().rstrip(".")
        with self.lock:
            self.queries.append((name, TYPE_NAMES.get(qtype, str(qtype)), proto))
            entry = self.script.get(name)
            spec = None
            if entry is not None:
                spec = entry.get(TYPE_NAMES.get(qtype, ""), entry.get("*"))
        rcode, tc, answers, authority = 0, False, [], []
        soa = rr(name or ".", TYPES["SOA"], encode_name("ns.test") + encode_name("hostmaster.test")
                 + struct.pack("!IIIII", 1, 3600, 600, 86400, TTL))
        if entry is None:
            rcode, authority = RCODES["NXDOMAIN"], [soa]
        elif spec is None or spec == "NODATA":
            authority = [soa]
        elif spec == "TIMEOUT":
            return None
        elif spec in ("SERVFAIL", "REFUSED", "NXDOMAIN", "NOTIMP", "FORMERR"):
            rcode = RCODES[spec]
            if spec == "NXDOMAIN":
                authority = [soa]
        elif spec == "TC":
            tc = True
        elif spec in ("BAD_RDLENGTH", "WRONG_OWNER"):
            # records that would be fine but for the fault (TEST-NET addresses)
            good = {TYPES["A"]: ["192.0.2.99"], TYPES["AAAA"]: ["2001:db8::99"],
                    TYPES["MX"]: [(10, "mx.elsewhere.test")]}.get(qtype, [])
            for i, v in enumerate(good):
                data = rdata_for(qtype, v)
                if spec == "BAD_RDLENGTH" and i == 0:
                    data += b"\0"  # RDLENGTH one more than the record has
                owner = "other-owner.test" if spec == "WRONG_OWNER" else name
                answers.append(rr(owner, qtype, data))
        else:
            for v in spec:
                answers.append(rr(name, qtype, rdata_for(qtype, v)))
        flags = 0x8400 | (0x0100 & flags) | rcode  # QR, AA, RD copied
        if tc:
            flags |= 0x0200
        head = struct.pack("!HHHHHH", qid, flags, 1, len(answers), len(authority), 0)
        reply = head + question + b"".join(answers) + b"".join(authority)
        if proto == "udp" and len(reply) > 512:
            # RFC 1035 §4.2.1: over UDP only what fits; TC says ask over TCP
            reply = struct.pack("!HHHHHH", qid, flags | 0x0200, 1, 0, 0, 0) + question
        return reply

    # servers ----------------------------------------------------------------------

    def start(self):
        for _ in range(10):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind((self.host, self.port))
            port = udp.getsockname()[1]
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind((self.host, port))
            except OSError:
                udp.close()
                tcp.close()
                if self.port:
                    raise
                continue
            tcp.listen(16)
            self.port, self.udp, self.tcp = port, udp, tcp
            break
        else:
            raise AssertionError("no port free for UDP and TCP on %s" % self.host)
        for target in (self._serve_udp, self._serve_tcp):
            t = threading.Thread(target=target, daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def _serve_udp(self):
        while True:
            try:
                msg, peer = self.udp.recvfrom(4096)
            except OSError:
                return
            try:
                reply = self.answer(msg, "udp")
            except Exception:  # a query we cannot parse: no answer, like a real server
                reply = None
            if reply is not None:
                try:
                    self.udp.sendto(reply, peer)
                except OSError:
                    pass

    def _serve_tcp(self):
        while True:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            threading.Thread(target=self._tcp_conn, args=(conn,), daemon=True).start()

    def _tcp_conn(self, conn):
        conn.settimeout(10)
        try:
            for _ in range(100):  # bounded: queries per connection
                head = self._read(conn, 2)
                if head is None:
                    return
                msg = self._read(conn, struct.unpack("!H", head)[0])
                if msg is None:
                    return
                reply = self.answer(msg, "tcp")
                if reply is not None:
                    conn.sendall(struct.pack("!H", len(reply)) + reply)
        except OSError:
            pass
        finally:
            conn.close()

    @staticmethod
    def _read(conn, n):
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    def stop(self):
        for s in (self.udp, self.tcp):
            if s is not None:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
        for t in self.threads:
            t.join(5)
        self.threads = []


def tcp_query(port, name, qtype, host="127.0.0.1", timeout=2.0):
    """One query over TCP; returns (flags, rcode, ancount, raw reply)."""
    msg = struct.pack("!HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0) + encode_name(name) + struct.pack("!HH", qtype, 1)
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(struct.pack("!H", len(msg)) + msg)
        n = struct.unpack("!H", ScriptedDNS._read(s, 2))[0]
        data = ScriptedDNS._read(s, n)
    flags, _, an = struct.unpack("!HHH", data[2:8])
    return flags, flags & 0xF, an, data
