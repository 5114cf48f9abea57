# odmr_customer: a scripted ODMR customer (RFC 2645) for the tests: it
# connects to relayd's odmr_listen port, says EHLO, authenticates with
# CRAM-MD5 (RFC 2195) or PLAIN, optionally after STARTTLS, sends ATRN, and
# after the 250 plays the SMTP server the relay delivers to: it records each
# transaction (dot-unstuffed bytes) and can stop answering or drop the
# connection after N messages, which etrnctl atrn (always end to end) never
# does. Only its own socket is ever closed.

import base64
import hashlib
import hmac
import socket
import ssl


class Reply:
    def __init__(self, lines):
        self.lines = lines
        self.code = int(lines[-1][:3])
        self.text = lines[-1][4:]

    def __repr__(self):
        return "Reply(%r)" % self.lines


class Customer:
    def __init__(self, port, host="127.0.0.1", timeout=20):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.greeting = self.reply()

    # --- client side, before the turn ---------------------------------------

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("connection closed by the relay")
        self.buf += data

    def raw_line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def line(self):
        return self.raw_line().decode("utf-8", "replace")

    def reply(self):
        lines = []
        while True:
            line = self.line()
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return Reply(lines)

    def send(self, line):
        self.sock.sendall(line.encode() + b"\r\n")

    def cmd(self, line):
        self.send(line)
        return self.reply()

    def ehlo(self, name="site.test"):
        r = self.cmd("EHLO " + name)
        assert r.code == 250, r
        self.keywords = {l[4:].split(" ")[0].upper(): l[4:] for l in r.lines[1:]}
        return r

    def starttls(self, cafile=None):
        r = self.cmd("STARTTLS")
        assert r.code == 220, r
        ctx = ssl.create_default_context(cafile=cafile) if cafile else ssl._create_unverified_context()
        if not cafile:
            ctx.check_hostname = False
        self.sock = ctx.wrap_socket(self.sock, server_hostname="relay.test")
        self.buf = b""
        return r

    def auth_cram_md5(self, user, password):
        r = self.cmd("AUTH CRAM-MD5")
        if r.code != 334:
            return r
        challenge = base64.b64decode(r.text)
        digest = hmac.new(password.encode(), challenge, hashlib.md5).hexdigest()
        return self.cmd(base64.b64encode(("%s %s" % (user, digest)).encode()).decode())

    def auth_plain(self, user, password):
        token = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()).decode()
        return self.cmd("AUTH PLAIN " + token)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    # --- server side, after ATRN's 250 ----------------------------------------

    def serve(self, stop_after=None, stop_how="drop", data_reply="250 2.0.0 stored", on_message=None):
        """Greet the relay and take its messages. stop_after=N: after N
        messages were answered, stop at the next end of data ("drop": close
        without a reply; "hang": return without closing). Returns the list of
        (mail_from, [rcpts], data) answered with data_reply. on_message(n) is
        called before the reply to the n-th message."""
        got = []
        self.send("220 site.test ESMTP customer")
        mail, rcpts = None, []
        while True:
            line = self.line()
            verb = line.split(" ")[0].upper()
            if verb in ("EHLO", "HELO"):
                self.send("250-site.test")
                self.send("250-PIPELINING")
                self.send("250-8BITMIME")
                self.send("250 ENHANCEDSTATUSCODES")
            elif verb == "MAIL":
                mail, rcpts = line[10:].split(">")[0].lstrip("<"), []
                self.send("250 2.1.0 ok")
            elif verb == "RCPT":
                rcpts.append(line[8:].split(">")[0].lstrip("<"))
                self.send("250 2.1.5 ok")
            elif verb == "DATA":
                self.send("354 go ahead")
                lines = []
                while True:
                    l = self.raw_line()
                    if l == b".":
                        break
                    lines.append(l[1:] if l.startswith(b".") else l)
                data = b"\r\n".join(lines) + b"\r\n" if lines else b""
                if stop_after is not None and len(got) >= stop_after:
                    if stop_how == "drop":
                        self.close()
                    return got
                got.append((mail, rcpts, data))
                if on_message is not None:
                    on_message(len(got))
                self.send(data_reply)
            elif verb == "RSET" or verb == "NOOP":
                self.send("250 2.0.0 ok")
            elif verb == "QUIT":
                self.send("221 2.0.0 bye")
                self.close()
                return got
            else:
                self.send("502 5.5.1 no")
