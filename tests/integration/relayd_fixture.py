# relayd_fixture: starts the real relayd as a process on loopback with a
# generated config in a temp dir, waits for its ready line, and gives tests
# SMTP clients (smtplib and a byte-exact raw socket), log access and a
# read-only view of the SQLite queue. It only ever signals the process it
# started (by PID) and never writes to the queue.

import os
import random
import re
import signal
import socket
import sqlite3
import smtplib
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

QUEUE_ID_RE = r"[0-9A-Z]{14}"
QUEUED_RE = re.compile(r"^250 2\.0\.0 Ok: queued as (" + QUEUE_ID_RE + r")$")
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def relayd_binary():
    """The relayd under test: $RELAYD, else the build tree's relayd/relayd."""
    path = os.environ.get("RELAYD")
    if not path:
        builddir = os.environ.get("top_builddir")
        if builddir:
            path = os.path.join(builddir, "relayd", "relayd")
        else:
            path = os.path.join(HERE, "..", "..", "relayd", "relayd")
    return os.path.abspath(path)


def free_port(host="127.0.0.1"):
    """A port nobody is listening on right now (bind port 0, then close)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_until(pred, timeout, interval=0.05, what="condition"):
    """Poll pred() until it returns something true; bounded by timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def only_crlf(data):
    """True if every CR in data is followed by LF and every LF preceded by CR."""
    return re.search(rb"\r(?!\n)|(?<!\r)\n", data) is None


def split_received(body):
    """Split a stored body into (our Received: header, the message as sent)."""
    assert body.startswith(b"Received: "), body[:200]
    pos = 0
    while True:
        end = body.index(b"\r\n", pos)
        nxt = body[end + 2 : end + 3]
        if nxt not in (b" ", b"\t"):
            return body[: end + 2], body[end + 2 :]
        pos = end + 2


# --- SMTP over a raw socket -----------------------------------------------------------


class Reply:
    """One complete SMTP reply (possibly multi-line)."""

    def __init__(self, lines):
        self.lines = lines  # each without CRLF, e.g. "250-relay.test"
        self.code = int(lines[0][:3])
        self.texts = [l[4:] for l in lines]
        self.text = "\n".join(self.texts)

    @property
    def line(self):
        return self.lines[-1] if len(self.lines) == 1 else "\n".join(self.lines)

    def __repr__(self):
        return "Reply(%r)" % ("\n".join(self.lines),)


class RawSMTP:
    """A byte-exact SMTP client: send any bytes, read replies with deadlines."""

    def __init__(self, port, host="127.0.0.1", timeout=10, source=None, greet=True):
        self.timeout = timeout
        src = (source, 0) if source else None
        self.sock = socket.create_connection((host, port), timeout=timeout, source_address=src)
        self.buf = b""
        self.greeting = self.reply() if greet else None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def abort(self):
        """Close with a TCP RST instead of a FIN."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except OSError:
            pass
        self.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self, deadline):
        """Read more bytes into buf; False on EOF. Raises TimeoutError at the deadline."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no complete reply in time; have %r" % self.buf[:300])
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("no complete reply in time; have %r" % self.buf[:300])
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return False
        self.buf += chunk
        return True

    def reply(self, timeout=None):
        """The next complete reply. Raises EOFError if the server closed first."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        lines = []
        while True:
            i = self.buf.find(b"\n")
            if i < 0:
                if not self._fill(deadline):
                    raise EOFError("connection closed; partial reply %r, buffer %r" % (lines, self.buf))
                continue
            raw, self.buf = self.buf[:i], self.buf[i + 1 :]
            assert raw.endswith(b"\r"), "reply line not ended by CRLF: %r" % raw
            line = raw[:-1].decode("utf-8", "replace")
            assert re.match(r"^\d{3}([ -]|$)", line), "malformed reply line %r" % line
            lines.append(line)
            if len(line) == 3 or line[3] == " ":
                return Reply(lines)

    def replies(self, n, timeout=None):
        return [self.reply(timeout) for _ in range(n)]

    def cmd(self, line, timeout=None):
        self.send(line + "\r\n" if isinstance(line, str) else line + b"\r\n")
        return self.reply(timeout)

    def expect(self, line, code, timeout=None, contains=None):
        """Send a command and assert the reply code (and optional text)."""
        r = self.cmd(line, timeout)
        assert r.code == code, "%r -> %r, expected %d" % (line, r, code)
        if contains:
            assert contains in r.text, "%r -> %r, expected to contain %r" % (line, r, contains)
        return r

    def ehlo(self, name="client.test"):
        return self.expect("EHLO " + name, 250)

    def at_eof(self, timeout=5):
        """True if the server closes the connection (after any unread replies) in time."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.buf:
                    return False
                if not self._fill(deadline):
                    return True
        except (TimeoutError, ConnectionResetError):
            return False

    def silent(self, seconds):
        """True if nothing at all arrives for the given time (and no EOF)."""
        if self.buf:
            return False
        self.sock.settimeout(seconds)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return True
        self.buf += chunk
        return False

    def start_tls(self, context, server_hostname="relay.test"):
        """TLS handshake on this connection (after the server's 220)."""
        assert self.buf == b"", "unread bytes before the TLS handshake: %r" % self.buf
        self.sock.settimeout(self.timeout)
        self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname)

    def send_message(self, sender, rcpts, data, timeout=None):
        """A whole transaction, one command at a time; returns the reply to the dot.
        data is sent as given (the caller dot-stuffs) followed by CRLF.CRLF."""
        self.expect("MAIL FROM:<%s>" % sender, 250)
        for r in rcpts:
            self.expect("RCPT TO:<%s>" % r, 250)
        self.expect("DATA", 354)
        self.send(data + b".\r\n")
        return self.reply(timeout)


def queue_id_of(reply):
    """The queue id in a '250 2.0.0 Ok: queued as ID' reply, asserting its shape."""
    text = reply if isinstance(reply, str) else reply.line
    m = QUEUED_RE.match(text)
    assert m, "expected '250 2.0.0 Ok: queued as ID', got %r" % text
    return m.group(1)


# --- the queue, read-only ---------------------------------------------------------------


class Queue:
    """Read-only access to relayd's SQLite queue (WAL is fine)."""

    def __init__(self, path):
        self.path = path

    def _connect(self):
        uri = "file:%s?mode=ro" % self.path
        conn = sqlite3.connect(uri, uri=True, timeout=10)
        conn.row_factory = sqlite3.Row
        return conn

    def query(self, sql, args=()):
        conn = self._connect()
        try:
            return [dict(r) for r in conn.execute(sql, args).fetchall()]
        finally:
            conn.close()

    def messages(self):
        return self.query("SELECT * FROM message ORDER BY id")

    def count(self):
        return self.query("SELECT count(*) AS n FROM message")[0]["n"]

    def message(self, queue_id):
        """The message row with 'body' (bytes), 'bodies' (row count) and
        'recipients' (list of rows) added, or None."""
        conn = self._connect()
        try:
            row = conn.execute("SELECT * FROM message WHERE queue_id = ?", (queue_id,)).fetchall()
            if not row:
                return None
            assert len(row) == 1, "queue id %s appears %d times" % (queue_id, len(row))
            m = dict(row[0])
            bodies = conn.execute("SELECT data FROM message_body WHERE message_id = ?", (m["id"],)).fetchall()
            m["bodies"] = len(bodies)
            m["body"] = bytes(bodies[0][0]) if bodies else None
            m["recipients"] = [
                dict(r) for r in conn.execute("SELECT * FROM recipient WHERE message_id = ? ORDER BY id", (m["id"],))
            ]
            return m
        finally:
            conn.close()

    def all_bodies(self):
        """{queue_id: body bytes} for every message."""
        rows = self.query(
            "SELECT m.queue_id AS q, b.data AS d FROM message m JOIN message_body b ON b.message_id = m.id"
        )
        out = {}
        for r in rows:
            assert r["q"] not in out, "queue id %s has two bodies" % r["q"]
            out[r["q"]] = bytes(r["d"])
        return out

    def integrity(self):
        return self.query("PRAGMA integrity_check")[0]


# --- the daemon -------------------------------------------------------------------------


class Relayd:
    """One relayd process with its own config, queue and log in a temp dir.

    Config values come from keyword arguments (None removes a default key);
    `domains` maps a domain name to its section's keys; `extra` is raw text
    appended to the file."""

    DEFAULT_DOMAINS = {"example.org": {"mode": "hold"}, "sub.test": {"subdomains": "yes"}}

    def __init__(self, workdir, domains=None, extra="", listen_host="127.0.0.1", port=None, env=None, **keys):
        self.dir = workdir
        os.makedirs(self.dir, exist_ok=True)
        self.conf = os.path.join(self.dir, "relayd.conf")
        self.logfile = os.path.join(self.dir, "relayd.log")
        self.db = os.path.join(self.dir, "queue", "queue.db")
        self.listen_host = listen_host
        self.fixed_port = port is not None
        self.port = port
        self.keys = {
            "hostname": "relay.test",
            "database": self.db,
            "shutdown_timeout": "3s",
            "log_level": "info",
            # never ask the machine's resolver (off loopback): a closed
            # loopback port makes every lookup a quick temporary failure
            "dns_servers": "127.0.0.1:1",
        }
        # the operators' control socket (issue 4): one per daemon, in its own
        # directory; unix socket paths are short (sun_path), so a deep workdir
        # gets a short directory of its own under /tmp
        sock = os.path.join(self.dir, "control.sock")
        if len(sock) >= 100:
            sock = os.path.join(tempfile.mkdtemp(prefix="relayd-ctl-"), "control.sock")
        self.keys["control_socket"] = sock
        for k, v in keys.items():
            if v is None:
                self.keys.pop(k, None)
            else:
                self.keys[k] = v
        if "database" in self.keys:
            self.db = self.keys["database"]
            if not os.path.isabs(self.db):
                self.db = os.path.join(self.dir, self.db)
        self.domains = dict(self.DEFAULT_DOMAINS if domains is None else domains)
        self.extra = extra
        self.env = dict(os.environ, **(env or {}))
        self.proc = None
        self.pid = None
        self.sent_signals = []  # signals we sent to the current process
        self.exits = []  # (returncode, signals we had sent) of every finished process
        self.log_start = 0  # log offset where the current process started
        # how relayd is started: a command prefix (e.g. a private /dev/log in a
        # mount namespace, syslog_capture.py) and whether it logs to stderr (-d)
        self.launcher = []
        self.stderr_log = True
        self.clients = []
        self.queue = Queue(self.db)

    # config ------------------------------------------------------------------

    def listen_text(self):
        host = "[%s]" % self.listen_host if ":" in self.listen_host else self.listen_host
        return "%s:%d" % (host, self.port)

    def config_text(self):
        lines = ["# written by the relayd integration tests"]
        keys = dict(self.keys)
        keys.setdefault("listen", self.listen_text())
        for k, v in keys.items():
            lines.append("%s = %s" % (k, v))
        for name, sect in self.domains.items():
            lines.append("")
            lines.append("[domain %s]" % name)
            for k, v in sect.items():
                lines.append("%s = %s" % (k, v))
        lines.append(self.extra)
        return "\n".join(lines) + "\n"

    def write_config(self, text=None):
        with open(self.conf, "w") as f:
            f.write(self.config_text() if text is None else text)

    # process -----------------------------------------------------------------

    def log_text(self, since_start=False):
        try:
            with open(self.logfile, "rb") as f:
                if since_start:
                    f.seek(self.log_start)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n=60):
        return "\n".join(self.log_text().splitlines()[-n:])

    def wait_log(self, regex, timeout=5, since=0):
        """Wait until the log (from byte offset `since`) matches regex; returns the match."""
        rx = re.compile(regex, re.M)

        def look():
            with open(self.logfile, "rb") as f:
                f.seek(since)
                return rx.search(f.read().decode("utf-8", "replace"))

        try:
            return wait_until(look, timeout, what="log line /%s/" % regex)
        except AssertionError:
            raise AssertionError("log never matched /%s/ within %ss; log tail:\n%s" % (regex, timeout, self.log_tail()))

    def log_lines(self, regex, since=0):
        """Every match of regex in the log from byte offset `since`, in order."""
        with open(self.logfile, "rb") as f:
            f.seek(since)
            return list(re.finditer(regex, f.read().decode("utf-8", "replace"), re.M))

    def log_size(self):
        try:
            return os.path.getsize(self.logfile)
        except FileNotFoundError:
            return 0

    def start(self, ready_timeout=10):
        """Start relayd -d and wait (bounded) for 'relayd ready'."""
        assert self.proc is None, "already running"
        for attempt in range(5):
            if not self.fixed_port:
                self.port = free_port(self.listen_host)
            self.write_config()
            self.log_start = self.log_size()
            log = open(self.logfile, "ab")
            try:
                self.proc = subprocess.Popen(
                    self.launcher + [relayd_binary()] + (["-d"] if self.stderr_log else []) + ["-f", self.conf],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    cwd=self.dir,
                    env=self.env,
                    start_new_session=True,
                )
            finally:
                log.close()
            self.pid = self.proc.pid
            self.sent_signals = []
            deadline = time.monotonic() + ready_timeout
            while time.monotonic() < deadline:
                if "relayd ready" in self.log_text(since_start=True):
                    return self
                if self.proc.poll() is not None:
                    break
                time.sleep(0.02)
            if self.proc.poll() is None:
                self._force_kill()
                raise AssertionError("relayd did not log 'relayd ready' within %ss:\n%s" % (ready_timeout, self.log_tail()))
            rc = self.proc.returncode
            self._reap()
            text = self.log_text(since_start=True)
            if not self.fixed_port and re.search(r"(?i)address already in use|EADDRINUSE", text):
                continue  # somebody took the port between our probe and relayd's bind
            raise AssertionError("relayd exited with status %s before it was ready:\n%s" % (rc, self.log_tail()))
        raise AssertionError("relayd could not bind a free port in 5 attempts")

    def _reap(self):
        self.exits.append((self.proc.returncode, list(self.sent_signals)))
        self.proc = None

    def _force_kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGKILL)
            self.proc.wait(10)
        if self.proc is not None:
            self._reap()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        assert self.proc is not None
        self.sent_signals.append(sig)
        os.kill(self.pid, sig)

    def wait_exit(self, timeout):
        """Wait for the process to exit; returns its status or None on timeout."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._reap()
        return rc

    def stop(self, timeout=15):
        """SIGTERM, bounded wait, then SIGKILL. Returns the exit status; asserts it
        exited by itself in time."""
        if self.proc is None:
            return None
        for c in self.clients:
            c.close()
        self.clients = []
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        rc = self.wait_exit(timeout)
        if rc is None:
            self._force_kill()
            raise AssertionError("relayd did not exit within %ss of SIGTERM:\n%s" % (timeout, self.log_tail()))
        return rc

    def kill9(self):
        self.signal(signal.SIGKILL)
        rc = self.wait_exit(10)
        assert rc == -signal.SIGKILL, rc

    def restart(self, ready_timeout=10):
        if self.proc is not None:
            rc = self.stop()
            assert rc == 0, "relayd exited %s on SIGTERM:\n%s" % (rc, self.log_tail())
        self.fixed_port = True
        return self.start(ready_timeout)

    def reload(self, timeout=5):
        """SIGHUP; returns the log offset before the signal."""
        off = self.log_size()
        self.signal(signal.SIGHUP)
        return off

    def check_health(self):
        """Problems the process showed: sanitizer reports, deaths by a signal we did
        not send. Returns a list of strings (empty = healthy)."""
        problems = []
        text = self.log_text()
        for m in SANITIZER_MARKERS:
            if m in text:
                i = text.index(m)
                problems.append("log contains %r:\n%s" % (m, text[max(0, i - 2000) : i + 4000]))
        for rc, sent in self.exits:
            if rc < 0 and -rc not in sent:
                problems.append("relayd died from signal %d (%s)" % (-rc, signal.Signals(-rc).name))
        return problems

    # clients -----------------------------------------------------------------

    def smtp(self, timeout=10, helo=None):
        s = smtplib.SMTP("127.0.0.1" if ":" not in self.listen_host else self.listen_host, self.port,
                         local_hostname="client.test", timeout=timeout)
        self.clients.append(s)
        return s

    def raw(self, timeout=10, source=None, greet=True, host=None):
        c = RawSMTP(self.port, host=host or self.listen_host, timeout=timeout, source=source, greet=greet)
        self.clients.append(c)
        return c


def run_relayd(args, timeout=20, cwd=None):
    """Run the relayd binary to completion (for -t, -n, -V and bad configs)."""
    return subprocess.run(
        [relayd_binary()] + args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        timeout=timeout,
        cwd=cwd,
    )


def make_message(subject="test", body_lines=None, extra_headers=()):
    """A message as CRLF bytes: headers, blank line, body lines."""
    if body_lines is None:
        body_lines = ["Hello."]
    lines = ["From: a@b.test", "To: u@example.org", "Subject: " + subject]
    lines += list(extra_headers)
    lines.append("")
    lines += body_lines
    return ("\r\n".join(lines) + "\r\n").encode()


def dot_stuff(data):
    """RFC 5321 §4.5.2 transparency, as a client does it."""
    out = re.sub(rb"(?m)^\.", b"..", data)
    return out


def seeded_random(name):
    """A random.Random seeded from RELAYD_TEST_SEED or the clock; prints the seed."""
    seed = int(os.environ.get("RELAYD_TEST_SEED", "0")) or int(time.time() * 1000) % 1000000007
    print("%s: random seed %d (set RELAYD_TEST_SEED=%d to repeat)" % (name, seed, seed))
    return random.Random(seed), seed


def run_to_exit(r, timeout=20):
    """Start Relayd r (config written here) and wait, bounded, for it to end by
    itself: for start-ups that must fail. Returns (status, output); status is
    None when it was still running at the deadline (then it is killed)."""
    if not r.fixed_port:
        r.port = free_port(r.listen_host)
    r.write_config()
    p = subprocess.Popen([relayd_binary(), "-d", "-f", r.conf], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=r.dir, env=r.env,
                         start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        os.kill(p.pid, signal.SIGKILL)
        out, _ = p.communicate(timeout=10)
        rc = None
    return rc, out.decode("utf-8", "replace")
