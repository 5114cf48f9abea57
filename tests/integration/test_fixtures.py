# test_fixtures: the test peers themselves, so a test that passes does so
# because relayd behaved, not because a fixture saw nothing. The sink ends
# lines at CRLF only, answers a pipelined group as a real server does (all
# replies together, in order) and reports a client that breaks RFC 2920; it
# records the envelope, the parameters and the dot-unstuffed bytes. dnsmasq
# serves exactly the records given (and NXDOMAIN for other names under the
# test domains); the Postfix site takes a message into the user's Maildir;
# test_etrnctl's fake relay answers and records as it is told.

import smtplib
import socket

from dns import TYPE_A, TYPE_MX, query
from relayd_fixture import RawSMTP


def raw(sink):
    return RawSMTP(sink.port, timeout=10)


def test_sink_ends_lines_at_crlf_only(delivery_env):
    sink = delivery_env.sink("self")
    c = raw(sink)
    c.ehlo()
    # a bare LF is part of the command, so this is one (unknown) command
    c.send(b"NOOP\nRSET\r\n")
    assert c.reply().line == "502 5.5.2 not implemented"
    assert sink.commands[-1] == "NOOP\nRSET"
    c.expect("MAIL FROM:<a@b.test> BODY=8BITMIME", 250)
    c.expect("RCPT TO:<u@example.org> NOTIFY=NEVER", 250)
    c.expect("DATA", 354)
    c.send(b"Subject: x\r\n\r\nbare\nLF and bare\rCR\r\n..dot\r\n.\r\n")
    assert c.reply().code == 250
    c.expect("QUIT", 221)
    (t,) = sink.wait_for(1, 10)
    assert t.data == b"Subject: x\r\n\r\nbare\nLF and bare\rCR\r\n.dot\r\n"
    assert (t.mail_from, t.mail_params, t.rcpts) == ("a@b.test", "BODY=8BITMIME", [("u@example.org", "NOTIFY=NEVER")])
    assert sink.violations() == []


def test_sink_answers_a_pipelined_group_together(delivery_env):
    sink = delivery_env.sink("self")
    c = raw(sink)
    c.ehlo()
    c.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.org>\r\nRCPT TO:<v@example.org>\r\nDATA\r\n")
    # the four replies come in one write, in order (a server that flushed
    # each one could hide a client that waits for each reply anyway)
    c.sock.settimeout(10)
    data = b""
    while data.count(b"\r\n") < 4:
        chunk = c.sock.recv(65536)
        assert chunk, data
        data += chunk
        if data.count(b"\r\n") < 4:
            assert data.count(b"\r\n") == 0, "replies split: %r" % data
    assert data == b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
    c.send(b"hi\r\n.\r\nQUIT\r\n")
    assert c.reply().code == 250 and c.reply().code == 221
    assert sink.violations() == []


def test_sink_reports_pipelining_violations(delivery_env):
    sink = delivery_env.sink("self")
    c = raw(sink)
    c.ehlo()
    # the message before the 354 (RFC 2920 §3.1: DATA ends a group)
    c.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.org>\r\nDATA\r\nSubject: early\r\n\r\n.\r\n")
    assert [r.code for r in c.replies(4)] == [250, 250, 354, 250]
    sink.wait_event(r"pipelining violation: \d+ bytes after DATA before the 354", 10)
    c.expect("QUIT", 221)
    # a group sent to a server that did not offer PIPELINING
    sink.behaviour.ehlo_extensions = [e for e in sink.behaviour.ehlo_extensions if e != "PIPELINING"]
    c = raw(sink)
    c.ehlo()
    c.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.org>\r\n")
    assert [r.code for r in c.replies(2)] == [250, 250]
    sink.wait_event(r"pipelining violation: MAIL and more in one group, PIPELINING not offered", 10)
    assert len(sink.violations()) == 2
    # the teardown would fail this test on them: they were the point here
    sink.events.clear()


def test_dnsmasq_serves_exactly_the_records_given(delivery_env):
    d = delivery_env.dns(mx=[("a.test", "mx.a.test", 10), ("a.test", "mx2.a.test", 20)],
                         hosts={"mx.a.test": "127.0.0.5", "mx2.a.test": ["127.0.0.6", "127.0.0.7"]},
                         null_mx=["nomail.test"])
    rcode, answers = query(d.port, "a.test", TYPE_MX)
    assert rcode == 0 and sorted(answers) == [(10, "mx.a.test"), (20, "mx2.a.test")]
    rcode, answers = query(d.port, "mx2.a.test", TYPE_A)
    assert rcode == 0 and sorted(answers) == ["127.0.0.6", "127.0.0.7"], answers
    assert query(d.port, "nomail.test", TYPE_MX) == (0, [(0, "")])
    # nothing else, and no upstream: a name it was not given does not exist
    assert query(d.port, "other.test", TYPE_A)[0] == 3  # NXDOMAIN


def test_postfix_site_takes_mail_into_the_maildir(delivery_env):
    pf = delivery_env.postfix("pfself.test", users=["user"])
    s = smtplib.SMTP("127.0.0.1", pf.port, local_hostname="client.test", timeout=30)
    s.sendmail("s@sender.test", ["user@pfself.test"], b"Subject: to postfix\r\n\r\nhello postfix\r\n")
    s.quit()
    (box,) = pf.wait_mail("user", 1, 30)
    # Maildir keeps LF ends; Postfix adds its trace and missing header fields
    assert b"\nSubject: to postfix\n" in box and box.endswith(b"\n\nhello postfix\n"), box
    # and it refuses what is not its own
    s = smtplib.SMTP("127.0.0.1", pf.port, local_hostname="client.test", timeout=30)
    try:
        code, _ = s.docmd("MAIL FROM:<s@sender.test>")
        assert code == 250
        code, _ = s.docmd("RCPT TO:<user@elsewhere.test>")
        assert code == 550, code  # not a domain it serves
    finally:
        s.close()


def test_free_port_is_free():
    from relayd_fixture import free_port

    p = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", p))


def test_fake_relay_answers_as_configured():
    """test_etrnctl's FakeRelay: the greeting, EHLO keywords and ETRN answer it
    is given, every command and connection recorded."""
    from test_etrnctl import FakeRelay

    f = FakeRelay(etrn=lambda arg: "253 2.0.0 3 pending messages for node <%s> started" % arg).start()
    try:
        c = RawSMTP(f.port, timeout=10)
        assert c.greeting.line == "220 fake.test ESMTP"
        assert c.ehlo().lines == ["250-fake.test hello", "250-PIPELINING", "250 ETRN"]
        assert c.cmd("ETRN a.test").line == "253 2.0.0 3 pending messages for node <a.test> started"
        assert c.cmd("NOOP").line == "502 5.5.2 not implemented"
        assert c.cmd("QUIT").line == "221 bye"
        assert c.at_eof()
        assert f.etrns() == ["a.test"] and f.conns == 1
        assert f.commands == ["EHLO client.test", "ETRN a.test", "NOOP", "QUIT"]
    finally:
        f.stop()
    # a relay that turns clients away at the greeting hangs up after it
    f = FakeRelay(greeting="421 4.3.2 fake.test busy", ehlo=("PIPELINING",)).start()
    try:
        c = RawSMTP(f.port, timeout=10)
        assert c.greeting.line == "421 4.3.2 fake.test busy"
        assert c.at_eof()
        assert f.commands == []
    finally:
        f.stop()
