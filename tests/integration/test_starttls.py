# test_starttls: RFC 3207 with a generated certificate. STARTTLS is offered
# only with a cert and only before TLS; mail over TLS is queued with TLS noted
# in Received:; plaintext pipelined after STARTTLS is discarded (CVE-2011-0411
# class) and the session is reset so the client must EHLO again.

import re
import ssl

from relayd_fixture import make_message, queue_id_of, split_received


def client_context(cert, check_hostname=True):
    """Trusts only our generated cert. smtplib connects to 127.0.0.1 and would
    check that name, so it gets check_hostname=False (the chain is still verified)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cert)
    ctx.check_hostname = check_hostname
    return ctx


def tls_relayd(relayd_factory, tls_cert, **kw):
    cert, key = tls_cert
    return relayd_factory(tls_cert=cert, tls_key=key, **kw)


def test_ehlo_offers_starttls(relayd_factory, tls_cert):
    r = tls_relayd(relayd_factory, tls_cert)
    c = r.raw()
    rep = c.ehlo()
    assert rep.texts[1:] == [
        "PIPELINING", "SIZE 10485760", "STARTTLS", "ETRN", "8BITMIME", "ENHANCEDSTATUSCODES", "DSN"], rep


def test_starttls_without_cert_not_implemented(relayd):
    c = relayd.raw()
    c.ehlo()
    rep = c.expect("STARTTLS", 502)
    assert rep.line.startswith("502 5.5.1"), rep
    c.expect("NOOP", 250)


def test_smtplib_starttls_message(relayd_factory, tls_cert):
    r = tls_relayd(relayd_factory, tls_cert)
    s = r.smtp()
    s.ehlo()
    assert s.has_extn("starttls")
    code, text = s.starttls(context=client_context(tls_cert[0], check_hostname=False))
    assert code == 220 and text.startswith(b"2.0.0"), (code, text)
    s.ehlo()
    assert not s.has_extn("starttls"), "STARTTLS offered again inside TLS"
    assert s.has_extn("pipelining")
    s.mail("a@b.test")
    s.rcpt("u@example.org")
    msg = make_message(subject="over tls", body_lines=[".dot", "x"])
    code, text = s.data(msg)
    qid = queue_id_of("%d %s" % (code, text.decode()))
    # STARTTLS again inside TLS
    code, text = s.docmd("STARTTLS")
    assert code == 503 and text.startswith(b"5.5.1"), (code, text)
    s.quit()
    m = r.queue.message(qid)
    hdr, rest = split_received(m["body"])
    assert rest == msg
    hdr = hdr.decode()
    assert "with ESMTPS id %s" % qid in hdr, hdr
    # RFC 5321 §4.4 lets the TLS comment sit anywhere in the field (Postfix puts it after "from")
    assert re.search(r"\(using TLSv1\.[23] with cipher \S+ \((\d+/)?\d+ bits\)\)", hdr), hdr


def test_mail_after_starttls_needs_new_ehlo(relayd_factory, tls_cert):
    r = tls_relayd(relayd_factory, tls_cert)
    c = r.raw()
    c.ehlo()
    rep = c.expect("STARTTLS", 220)
    assert rep.line.startswith("220 2.0.0"), rep
    c.start_tls(client_context(tls_cert[0]))
    rep = c.expect("MAIL FROM:<a@b.test>", 503)
    assert rep.line.startswith("503 5.5.1"), rep
    rep = c.expect("RCPT TO:<u@example.org>", 503)
    c.ehlo()
    c.expect("MAIL FROM:<a@b.test>", 250)
    c.expect("RCPT TO:<u@example.org>", 250)


def test_starttls_injection_discarded(relayd_factory, tls_cert):
    """STARTTLS\\r\\nRSET\\r\\n in one write: RSET must never be answered, neither
    in plaintext nor inside TLS."""
    r = tls_relayd(relayd_factory, tls_cert)
    c = r.raw()
    c.ehlo()
    c.send(b"STARTTLS\r\nRSET\r\nMAIL FROM:<injected@evil.test>\r\n")
    rep = c.reply()
    assert rep.line.startswith("220 2.0.0"), rep
    assert c.buf == b"", "plaintext after the 220: %r" % c.buf
    # no waiting for silence: a plaintext answer to the injected commands would
    # arrive before the server's first TLS record and break the handshake
    c.start_tls(client_context(tls_cert[0]))
    c.send(b"EHLO client.test\r\n")
    first = c.reply()
    assert first.lines[0] == "250-relay.test", "first reply inside TLS is not to our EHLO: %r" % first
    # exactly one reply per command from now on: no queued answers to RSET/MAIL
    c.expect("NOOP", 250)
    rep = c.expect("MAIL FROM:<a@b.test>", 250)  # would be 503 nested if the injected MAIL ran
    assert rep.line == "250 2.1.0 Ok", rep
    c.expect("RCPT TO:<u@example.org>", 250)
    c.expect("DATA", 354)
    c.send(make_message() + b".\r\n")
    m = r.queue.message(queue_id_of(c.reply()))
    assert m["sender"] == "a@b.test"
    c.expect("QUIT", 221)


def test_tls_handshake_garbage(relayd_factory, tls_cert):
    """A client that says STARTTLS and then sends junk instead of a ClientHello
    loses only its own connection."""
    r = tls_relayd(relayd_factory, tls_cert)
    c = r.raw()
    c.ehlo()
    c.expect("STARTTLS", 220)
    c.send(b"this is not TLS\r\n" * 100)
    assert c.at_eof(timeout=10), "server kept a connection with a failed handshake"
    c2 = r.raw()
    c2.ehlo()
    queue_id_of(c2.send_message("a@b.test", ["u@example.org"], make_message()))


def test_tls_client_disconnects_mid_handshake(relayd_factory, tls_cert):
    r = tls_relayd(relayd_factory, tls_cert)
    for _ in range(5):
        c = r.raw()
        c.ehlo()
        c.expect("STARTTLS", 220)
        c.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # truncated ClientHello
        c.abort()
    s = r.smtp()
    s.starttls(context=client_context(tls_cert[0], check_hostname=False))
    s.ehlo()
    assert s.noop()[0] == 250
    s.quit()
