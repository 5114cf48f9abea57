# sink: a small recording SMTP server on loopback for the delivery tests. It
# plays the site's MTA (or the sender's, for bounces): every completed
# transaction is kept in memory with its envelope and the exact message bytes
# (dot-unstuffed), and its behaviour can be changed per test while it runs:
# answer 4xx/5xx to RCPT or to the final dot, drop the connection in the
# middle of DATA, or never answer at all. With a certificate it offers
# STARTTLS (RFC 3207) and notes per transaction whether it came over TLS; it
# can also refuse STARTTLS (454) or break the handshake. It only listens on
# the address it is given and only closes its own sockets.

import re
import socket
import socketserver
import ssl
import subprocess
import threading
import time

IDLE_TIMEOUT = 60  # seconds a connection may sit silent before the sink gives up


class Transaction:
    """One message the sink acknowledged with 250 after the dot."""

    def __init__(self, helo, mail_from, mail_params, rcpts, data, peer, conn_no, tls=None):
        self.helo = helo
        self.tls = tls  # None in clear, else the TLS version ("TLSv1.3")
        self.mail_from = mail_from  # address without <>, '' for the null sender
        self.mail_params = mail_params  # the text after MAIL FROM:<...>
        self.rcpts = rcpts  # [(address, params text)]
        self.data = data  # bytes, CRLF lines, dot-unstuffed, without the final dot
        self.peer = peer
        self.conn_no = conn_no
        self.time = time.monotonic()

    @property
    def rcpt_addrs(self):
        return [a for a, _ in self.rcpts]

    def __repr__(self):
        return "Transaction(from=<%s>, to=%r, %d bytes)" % (self.mail_from, self.rcpt_addrs, len(self.data))


class Behaviour:
    """What the sink answers. Attributes may be changed while it runs.

    rcpt:   None (250) or a function address -> (code, text) or None (250)
    data:   None (250) or a list of (code, text) answered to successive final dots
            (the last one repeats), or a function Transaction -> (code, text)
    hang:   None, or "greeting" (accept, never greet), "data" (take DATA and the
            message, never answer the dot)
    drop_in_data: None, or a number of body bytes after which the connection is
            closed in the middle of DATA (no reply)
    drop_rst: with drop_in_data, end that connection with a TCP RST (a site
            that crashes or a middlebox that resets) instead of a FIN
    delay:  seconds to sleep before answering each final dot (slows a flush)
    read_delay: seconds to sleep before each read of at most 64 KiB during
            DATA (a site that takes the body slowly)
    pause_data: None, or a threading.Event: after the first body line the sink
            stops reading until it is set (bounded by IDLE_TIMEOUT)
    With read_delay or pause_data the event "data started" is noted once
    the first body line is in. Sink(rcvbuf=N) keeps the receive buffer small,
    so a pause holds the sender back instead of filling the kernel's buffers.
    greeting: the 220 line's text
    refuse: None, or (code, text) sent instead of the 220 greeting, then the
            sink hangs up (a site that is up but will not take mail now)
    tls:    None (no STARTTLS), or (certfile, keyfile): STARTTLS is offered
            before TLS and the handshake made with that certificate
    starttls: None (220 and the handshake), a (code, text) reply that refuses
            STARTTLS (the session goes on in clear, RFC 3207 §4), or "break":
            220, then garbage instead of a TLS record, and hang up
    """

    def __init__(self):
        self.rcpt = None
        self.data = None
        self.hang = None
        self.drop_in_data = None
        self.drop_rst = False
        self.delay = 0.0
        self.read_delay = 0.0
        self.pause_data = None
        self.greeting = "sink.test ESMTP recording sink"
        self.refuse = None
        self.tls = None
        self.starttls = None
        self.ehlo_extensions = ["PIPELINING", "8BITMIME", "SIZE 104857600", "DSN", "ENHANCEDSTATUSCODES"]


class _Handler(socketserver.BaseRequestHandler):
    def handle(self):
        sink = self.server.sink
        sock = self.request
        # replies to pipelined commands go out as they are made: no Nagle wait
        # for the peer's delayed ACK (40 ms per message otherwise)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sink._conn_opened(sock)
        session = _Session(sink, sock, self.client_address)
        try:
            session.run()
        except (OSError, EOFError):
            pass
        finally:
            sink._conn_closed(session.sock)  # the TLS socket once STARTTLS wrapped it


class _Session:
    def __init__(self, sink, sock, peer):
        self.sink = sink
        self.sock = sock
        self.peer = peer
        self.buf = b""
        self.conn_no = sink._next_conn_no()
        self.in_data = False
        self.reset()
        self.helo = None
        self.tls = None  # the TLS version once STARTTLS succeeded
        self.out = []  # replies not yet sent (see send)

    @property
    def b(self):
        return self.sink.behaviour  # looked up each time: a test may change it

    def reset(self):
        self.mail_from = None
        self.mail_params = ""
        self.rcpts = []

    def send(self, line):
        """Queue a reply. As a real server does (Postfix, RFC 2920 §3.2), the
        replies to a group of pipelined commands go out together, when the
        input holds no further complete command (see flush)."""
        self.out.append(line.encode() + b"\r\n")

    def flush(self):
        if self.out:
            data, self.out = b"".join(self.out), []
            self.sock.sendall(data)

    def violation(self, what):
        """A client breaking RFC 2920 (or not pipelining where it may not):
        an event every delivery test's teardown looks for."""
        self.sink._event("pipelining violation: " + what)

    def readline(self):
        """One line with its CRLF, bytes; EOFError at EOF. Lines end at CRLF
        only (RFC 5321 §2.3.8): a bare LF is part of the line."""
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line, self.buf = self.buf[: i + 2], self.buf[i + 2 :]
                return line
            self.flush()  # nothing more to answer now: the group is complete
            if self.sink.stopping.is_set():
                raise EOFError
            if self.in_data and self.b.read_delay:
                time.sleep(self.b.read_delay)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk

    def hang_forever(self):
        """Say nothing until the peer goes away or the sink stops (bounded)."""
        self.flush()
        deadline = time.monotonic() + IDLE_TIMEOUT
        self.sock.settimeout(0.2)
        while time.monotonic() < deadline and not self.sink.stopping.is_set():
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                return
        raise EOFError

    def run(self):
        try:
            self._run()
        finally:
            self.flush()

    def _run(self):
        self.sock.settimeout(IDLE_TIMEOUT)
        if self.b.hang == "greeting":
            self.sink._event("hang at greeting")
            self.hang_forever()
            return
        if self.b.refuse:
            self.sink._event("refused at greeting %d" % self.b.refuse[0])
            self.send("%d %s" % self.b.refuse)
            return
        self.send("220 " + self.b.greeting)
        while True:
            raw = self.readline()
            line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
            verb = line.split(" ", 1)[0].upper()
            arg = line[len(verb) + 1 :] if " " in line else ""
            self.sink._command(line)
            if b"\r\n" in self.buf and "PIPELINING" not in self.b.ehlo_extensions:
                self.violation("%s and more in one group, PIPELINING not offered" % verb)
            if verb == "EHLO":
                self.helo = arg
                self.reset()
                exts = list(self.b.ehlo_extensions)
                if self.b.tls and not self.tls:
                    exts.append("STARTTLS")
                lines = ["sink.test greets " + arg] + exts
                for k, l in enumerate(lines):
                    self.send("250%s%s" % ("-" if k < len(lines) - 1 else " ", l))
            elif verb == "HELO":
                self.helo = arg
                self.reset()
                self.send("250 sink.test")
            elif verb == "MAIL":
                m = re.match(r"(?i)^FROM:\s*<([^>]*)>\s*(.*)$", arg)
                if not m:
                    self.send("501 5.5.4 bad MAIL")
                    continue
                self.reset()
                self.mail_from, self.mail_params = m.group(1), m.group(2)
                self.send("250 2.1.0 Ok")
            elif verb == "RCPT":
                m = re.match(r"(?i)^TO:\s*<([^>]*)>\s*(.*)$", arg)
                if not m or self.mail_from is None:
                    self.send("503 5.5.1 bad RCPT")
                    continue
                ans = self.b.rcpt(m.group(1)) if self.b.rcpt else None
                if ans and ans[0] != 250:
                    self.sink._event("rcpt %s refused %d" % (m.group(1), ans[0]))
                    self.send("%d %s" % ans)
                    continue
                self.rcpts.append((m.group(1), m.group(2)))
                self.send("250 2.1.5 Ok")
            elif verb == "DATA":
                if self.mail_from is None or not self.rcpts:
                    self.send("503 5.5.1 no valid recipients")
                    continue
                if self.buf:
                    # RFC 2920 §3.1: DATA ends a group; the message waits for the 354
                    self.violation("%d bytes after DATA before the 354" % len(self.buf))
                self.send("354 End data with <CR><LF>.<CR><LF>")
                self.take_data()
            elif verb == "STARTTLS" and self.b.tls and not self.tls:
                self.starttls()
            elif verb == "RSET":
                self.reset()
                self.send("250 2.0.0 Ok")
            elif verb == "NOOP":
                self.send("250 2.0.0 Ok")
            elif verb == "QUIT":
                self.send("221 2.0.0 Bye")
                return
            else:
                self.send("502 5.5.2 not implemented")

    def starttls(self):
        how = self.b.starttls
        if isinstance(how, tuple):
            self.sink._event("starttls refused %d" % how[0])
            self.send("%d %s" % how)
            return
        if self.buf:  # RFC 3207 §4: STARTTLS ends a group too
            self.violation("%d bytes after STARTTLS before the 220" % len(self.buf))
        self.send("220 2.0.0 Ready to start TLS")
        self.flush()
        if how == "break":
            self.sink._event("starttls broken")
            # an SSLv2-looking record that no TLS client accepts as ServerHello
            self.sock.sendall(b"\x80\x80garbage instead of a TLS handshake\r\n" * 4)
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            raise EOFError
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*self.b.tls)
        # RFC 3207 §4.2: nothing read before the handshake counts after it
        self.buf = b""
        raw = self.sock
        try:
            self.sock = ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as e:
            self.sink._event("tls handshake failed: %s" % e)
            raise EOFError
        with self.sink.lock:  # stop() shuts down what is open: the TLS socket now
            self.sink.open_conns.discard(raw)
            self.sink.open_conns.add(self.sock)
        self.tls = self.sock.version()
        self.sink._event("tls up %s" % self.tls)
        self.helo = None
        self.reset()

    def take_data(self):
        parts = []
        size = 0
        self.in_data = True
        try:
            return self._take_data(parts, size)
        finally:
            self.in_data = False

    def _take_data(self, parts, size):
        while True:
            raw = self.readline()
            if size == 0 and (self.b.read_delay or self.b.pause_data):
                self.sink._event("data started")
                if self.b.pause_data is not None:
                    self.b.pause_data.wait(IDLE_TIMEOUT)
            if raw == b".\r\n":
                break
            if raw.startswith(b"."):
                raw = raw[1:]  # RFC 5321 §4.5.2
            parts.append(raw)
            size += len(raw)
            if self.b.drop_in_data is not None and size >= self.b.drop_in_data:
                self.sink._event("dropped in DATA after %d bytes" % size)
                try:
                    if self.b.drop_rst:  # close() with linger 0 sends RST
                        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    else:
                        self.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                raise EOFError
        data = b"".join(parts)
        t = Transaction(self.helo, self.mail_from, self.mail_params, list(self.rcpts), data, self.peer, self.conn_no,
                        self.tls)
        if self.b.hang == "data":
            self.sink._event("hang at dot")
            self.hang_forever()
            return
        if self.b.delay:
            time.sleep(self.b.delay)
        ans = None
        if callable(self.b.data):
            ans = self.b.data(t)
        elif self.b.data:
            with self.sink.lock:
                ans = self.b.data[0] if len(self.b.data) == 1 else self.b.data.pop(0)
        if ans and ans[0] != 250:
            self.sink._event("dot refused %d" % ans[0])
            self.send("%d %s" % ans)
        else:
            # record before answering: whoever waits for it may check right away
            self.sink._record(t)
            self.send("250 2.0.0 Ok: accepted as M%d" % t.seq)
        self.reset()


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    rcvbuf = None

    def server_bind(self):
        # set before listen(), so accepted sockets advertise the small window
        if self.rcvbuf:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        super().server_bind()


class Sink:
    """A recording SMTP sink on host:port. start()/stop() may be called again
    on the same port (a site going down and coming back)."""

    def __init__(self, host="127.0.0.1", port=0, name="sink", rcvbuf=None):
        self.host = host
        self.rcvbuf = rcvbuf
        self.port = port
        self.name = name
        self.behaviour = Behaviour()
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.transactions = []
        self.events = []  # refusals, drops, hangs (strings)
        self.commands = []  # every command line received
        self.conns = 0  # connections accepted in all
        self.open_conns = set()
        self.max_open = 0
        self.stopping = threading.Event()
        self.server = None
        self.thread = None
        self._seq = 0
        self._conn_seq = 0

    # bookkeeping (called from handler threads) --------------------------------

    def _next_conn_no(self):
        with self.lock:
            self._conn_seq += 1
            return self._conn_seq

    def _conn_opened(self, sock):
        with self.cond:
            self.conns += 1
            self.open_conns.add(sock)
            self.max_open = max(self.max_open, len(self.open_conns))
            self.cond.notify_all()

    def _conn_closed(self, sock):
        with self.cond:
            self.open_conns.discard(sock)
            self.cond.notify_all()
        try:
            sock.close()
        except OSError:
            pass

    def _record(self, t):
        with self.cond:
            self._seq += 1
            t.seq = self._seq
            self.transactions.append(t)
            self.cond.notify_all()

    def _event(self, what):
        with self.cond:
            self.events.append(what)
            self.cond.notify_all()

    def _command(self, line):
        with self.lock:
            if len(self.commands) < 100000:
                self.commands.append(line)

    # control ------------------------------------------------------------------

    @property
    def address(self):
        return "%s:%d" % (self.host, self.port)

    def start(self):
        assert self.server is None, "sink already running"
        self.stopping.clear()
        self.server = _Server((self.host, self.port), _Handler, bind_and_activate=False)
        self.server.rcvbuf = self.rcvbuf
        try:
            self.server.server_bind()
            self.server.server_activate()
        except OSError:
            self.server.server_close()
            raise
        self.server.sink = self
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       name="%s-%d" % (self.name, self.port), daemon=True)
        self.thread.start()
        return self

    def stop(self):
        """Stop listening and close every open connection (bounded)."""
        if self.server is None:
            return
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
        with self.lock:
            socks = list(self.open_conns)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + 5
        with self.cond:
            while self.open_conns and time.monotonic() < deadline:
                self.cond.wait(0.1)
        self.thread.join(5)
        self.server = None
        self.thread = None

    @property
    def running(self):
        return self.server is not None

    # inspection ---------------------------------------------------------------

    def count(self):
        with self.lock:
            return len(self.transactions)

    def received(self):
        with self.lock:
            return list(self.transactions)

    def wait_for(self, n, timeout, what=None):
        """Wait until at least n transactions were recorded; returns them all."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.transactions) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("%s: %s: %d of %d messages after %.1fs; events %r" % (
                        self.name, what or "waiting", len(self.transactions), n, timeout, self.events[-5:]))
                self.cond.wait(min(left, 0.2))
            return list(self.transactions)

    def violations(self):
        """What clients did against RFC 2920/3207 pipelining rules."""
        with self.lock:
            return [e for e in self.events if e.startswith("pipelining violation")]

    def wait_event(self, regex, timeout):
        deadline = time.monotonic() + timeout
        rx = re.compile(regex)
        with self.cond:
            while True:
                for e in self.events:
                    if rx.search(e):
                        return e
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("%s: no event /%s/ within %ss; events %r" % (self.name, regex, timeout,
                                                                                  self.events[-5:]))
                self.cond.wait(min(left, 0.2))

    def wait_conns(self, n, timeout):
        """Wait until at least n connections were accepted in all."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.conns < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("%s: %d of %d connections after %ss" % (self.name, self.conns, n, timeout))
                self.cond.wait(min(left, 0.2))

    def quiet(self, seconds, n=None):
        """True if no transaction beyond n (default: the current count) arrives
        within seconds."""
        with self.cond:
            base = len(self.transactions) if n is None else n
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                if len(self.transactions) > base:
                    return False
                self.cond.wait(min(deadline - time.monotonic(), 0.2) if deadline > time.monotonic() else 0)
            return len(self.transactions) <= base


# --- helpers for the delivery tests -------------------------------------------------------

def make_cert(directory, name, cn="sink.test"):
    """A self-signed certificate (its own CA) for cn and 127.0.0.1, made with
    the openssl CLI as conftest's tls_cert is; returns (certfile, keyfile)."""
    cert, key = "%s/%s.pem" % (directory, name), "%s/%s.key" % (directory, name)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=%s" % cn,
         "-addext", "subjectAltName=DNS:%s,IP:127.0.0.1" % cn,
         "-addext", "basicConstraints=critical,CA:TRUE"],
        check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60,
    )
    return cert, key


def etrn(relayd, arg, timeout=10):
    """One ETRN over Python's smtplib (EHLO first, as RFC 1985 clients do);
    returns (code, text)."""
    import smtplib

    s = smtplib.SMTP("127.0.0.1", relayd.port, local_hostname="site.test", timeout=timeout)
    try:
        code, _ = s.ehlo()
        assert code == 250
        assert s.has_extn("etrn"), "ETRN not advertised in EHLO: %r" % s.esmtp_features
        code, text = s.docmd("ETRN", arg)
        s.quit()
    finally:
        s.close()
    return code, text.decode("utf-8", "replace")


def etrn_until_drained(relayd, arg, timeout, interval=0.2):
    """Repeat ETRN until 251 (the queue for arg has drained); bounded. Returns the
    list of (code, text) answers."""
    answers = []
    deadline = time.monotonic() + timeout
    while True:
        code, text = etrn(relayd, arg)
        answers.append((code, text))
        assert code in (251, 253), "ETRN %s -> %d %s" % (arg, code, text)
        if code == 251:
            return answers
        if time.monotonic() >= deadline:
            raise AssertionError("ETRN %s still %d %s after %ss" % (arg, code, text, timeout))
        time.sleep(interval)


class DSN:
    """An RFC 3464 delivery status notification as received by a sink."""

    def __init__(self, t):
        import email
        import email.policy

        self.t = t
        self.msg = email.message_from_bytes(t.data, policy=email.policy.compat32)
        ctype = self.msg.get_content_type()
        assert ctype == "multipart/report", "DSN is %s, not multipart/report" % ctype
        assert self.msg.get_param("report-type") == "delivery-status", self.msg.get("Content-Type")
        parts = self.msg.get_payload()
        assert isinstance(parts, list) and len(parts) >= 2, "a report has at least two parts"
        self.human = parts[0]
        status = [p for p in parts if p.get_content_type() == "message/delivery-status"]
        assert len(status) == 1, "one message/delivery-status part: %r" % [p.get_content_type() for p in parts]
        blocks = status[0].get_payload()
        assert isinstance(blocks, list) and len(blocks) >= 2, "per-message and per-recipient fields"
        self.per_message = blocks[0]
        self.recipients = blocks[1:]
        self.returned = [p for p in parts[2:]]

    def recipient(self, address):
        for r in self.recipients:
            fr = r.get("Final-Recipient", "")
            if fr.split(";", 1)[-1].strip().lower() == address.lower():
                return r
        raise AssertionError("no Final-Recipient %s in %r" % (address, [r.get("Final-Recipient") for r in
                                                                       self.recipients]))


class Client:
    """Submits messages to relayd over one smtplib connection; send() returns
    the queue id of each (asserting the 250)."""

    def __init__(self, relayd, helo="client.test", timeout=20):
        import smtplib

        self.s = smtplib.SMTP("127.0.0.1", relayd.port, local_hostname=helo, timeout=timeout)
        code, _ = self.s.ehlo()
        assert code == 250

    def send(self, sender, rcpts, data, mail_opts=(), rcpt_opts=()):
        from relayd_fixture import queue_id_of

        code, text = self.s.mail(sender, list(mail_opts))
        assert code == 250, "MAIL FROM:<%s> -> %d %r" % (sender, code, text)
        for r in rcpts:
            code, text = self.s.rcpt(r, list(rcpt_opts))
            assert code == 250, "RCPT TO:<%s> -> %d %r" % (r, code, text)
        code, text = self.s.data(data)  # smtplib dot-stuffs
        return queue_id_of("%d %s" % (code, text.decode()))

    def close(self):
        try:
            self.s.quit()
        except Exception:
            self.s.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def message(uid, to="u@example.org", lines=None, sender="sender@sender.test"):
    """A small unique message (CRLF), identified by its Subject and Message-ID."""
    body = lines if lines is not None else ["Hello from %s." % uid]
    text = "From: %s\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s@sender.test>\r\n\r\n%s\r\n" % (
        sender, to, uid, uid, "\r\n".join(body))
    return text.encode()


def subject_of(data):
    for line in data.split(b"\r\n"):
        if line.startswith(b"Subject: "):
            return line[9:].decode()
        if line == b"":
            break
    return None
