# test_limits: what protects the relay from greedy or broken clients: connection
# limits (global, per IP), idle and DATA timeouts, recipients per message,
# over-long command lines and too many errors. Each limit answers with the
# documented code and the daemon keeps serving everyone else.

import time

import pytest

from relayd_fixture import make_message, queue_id_of, wait_until


def greeted(r, source=None):
    c = r.raw(source=source)
    assert c.greeting.code == 220, c.greeting
    return c


def refused(r, source=None, contains=""):
    c = r.raw(source=source)
    assert c.greeting.code == 421, c.greeting
    assert c.greeting.line.startswith("421 4.7.0 relay.test"), c.greeting
    assert contains in c.greeting.line, c.greeting
    assert c.at_eof(), "server kept the refused connection open"


def eventually_greeted(r, source=None, timeout=5):
    """A freed slot may take the daemon a moment to notice."""
    def attempt():
        c = r.raw(source=source)
        if c.greeting.code == 220:
            return c
        c.close()
        return None

    return wait_until(attempt, timeout, interval=0.1, what="a free connection slot")


def test_max_connections_per_ip(relayd_factory):
    r = relayd_factory(max_connections_per_ip=2)
    a, b = greeted(r), greeted(r)
    refused(r, contains="too many connections from your address")
    # another address is not affected
    other = greeted(r, source="127.0.0.2")
    other.expect("NOOP", 250)
    a.expect("QUIT", 221)
    a.close()
    c = eventually_greeted(r)
    c.ehlo()
    b.expect("NOOP", 250)


def test_max_connections_global(relayd_factory):
    r = relayd_factory(max_connections=3)
    conns = [greeted(r, source="127.0.0.%d" % i) for i in (1, 2, 3)]
    refused(r, source="127.0.0.4", contains="too many connections")
    conns[0].close()
    eventually_greeted(r, source="127.0.0.4")


def test_command_timeout(relayd_factory):
    r = relayd_factory(command_timeout="3s")
    c = r.raw()
    port = c.sock.getsockname()[1]
    rep = c.reply(timeout=60)
    assert rep.line == "421 4.4.2 relay.test Error: timeout exceeded: no complete command in 3 s", rep
    assert c.at_eof()
    r.wait_log(r"timeout after GREETED from unknown\[127\.0\.0\.1\]:%d: no complete command in 3 s" % port)
    # the timer restarts on each command: a slow but active client survives
    # 4 s of pauses of 1 s each (2 s to spare per pause on a loaded machine)
    c2 = r.raw()
    c2.ehlo()
    for _ in range(4):
        time.sleep(1)
        c2.expect("NOOP", 250)
    # ... and it applies after EHLO, inside a transaction, too
    c2.expect("MAIL FROM:<a@b.test>", 250)
    rep = c2.reply(timeout=60)
    assert rep.line == "421 4.4.2 relay.test Error: timeout exceeded: no complete command in 3 s", rep
    assert c2.at_eof()


def test_data_timeout(relayd_factory):
    r = relayd_factory(command_timeout="30s", data_timeout="1s")
    c = r.raw()
    c.ehlo()
    c.expect("MAIL FROM:<a@b.test>", 250)
    c.expect("RCPT TO:<u@example.org>", 250)
    c.expect("DATA", 354)
    c.send(b"Subject: stalled\r\n\r\npartial body")
    rep = c.reply(timeout=10)
    assert rep.line.startswith("421 4.4.2 relay.test"), rep
    assert c.at_eof()
    assert r.queue.count() == 0


def test_data_timeout_is_between_reads(relayd_factory):
    """A slow client that keeps sending (faster than min_data_rate) is not cut
    off by data_timeout. test_slowloris.py: one slower than min_data_rate is."""
    r = relayd_factory(command_timeout="30s", data_timeout="2s", min_data_rate="10")
    c = r.raw()
    c.ehlo()
    c.expect("MAIL FROM:<a@b.test>", 250)
    c.expect("RCPT TO:<u@example.org>", 250)
    c.expect("DATA", 354)
    c.send(b"Subject: trickle\r\n\r\n")
    # 5.6 s in all, pauses of 0.7 s: 1.3 s to spare per pause on a loaded machine
    for i in range(8):
        time.sleep(0.7)
        c.send(b"line %d\r\n" % i)
    c.send(b".\r\n")
    queue_id_of(c.reply())


def test_101_recipients_by_default(relayd):
    c = relayd.raw(timeout=20)
    c.ehlo()
    rcpts = ["u%03d@example.org" % i for i in range(101)]
    c.send(b"MAIL FROM:<a@b.test>\r\n" + b"".join(b"RCPT TO:<%s>\r\n" % x.encode() for x in rcpts) + b"DATA\r\n")
    reps = c.replies(103)
    assert all(x.code == 250 for x in reps[:102]), [x for x in reps if x.code != 250]
    assert reps[102].code == 354
    c.send(make_message() + b".\r\n")
    m = relayd.queue.message(queue_id_of(c.reply()))
    assert [x["address"] for x in m["recipients"]] == rcpts
    assert m["bodies"] == 1


def test_max_recipients(relayd_factory):
    r = relayd_factory(max_recipients=100)
    c = r.raw(timeout=20)
    c.ehlo()
    c.expect("MAIL FROM:<a@b.test>", 250)
    for i in range(100):
        c.expect("RCPT TO:<u%03d@example.org>" % i, 250)
    rep = c.expect("RCPT TO:<u100@example.org>", 452)
    assert rep.line == "452 4.5.3 Error: too many recipients", rep
    c.expect("DATA", 354)
    c.send(make_message() + b".\r\n")
    m = r.queue.message(queue_id_of(c.reply()))
    assert len(m["recipients"]) == 100


@pytest.mark.parametrize("size", [3000, 100000])
def test_long_command_line(relayd, size):
    c = relayd.raw()
    c.ehlo()
    c.send(b"NOOP " + b"x" * size)  # no CRLF yet
    time.sleep(0.2)
    c.send(b"y" * 1000 + b"\r\n")
    rep = c.reply()
    assert rep.line.startswith("500 5.5.2") and "too long" in rep.line, rep
    # the rest of the line was discarded: the next reply is to the next command
    rep = c.expect("NOOP", 250)
    assert rep.line == "250 2.0.0 Ok", rep
    c.expect("MAIL FROM:<a@b.test>", 250)
    c.expect("RCPT TO:<u@example.org>", 250)


def test_long_line_inside_data_is_fine(relayd):
    """Lines in a message may be long (RFC 5322 says 998, real mail is worse): stored as sent."""
    c = relayd.raw()
    c.ehlo()
    body = b"Subject: long\r\n\r\n" + b"L" * 100000 + b"\r\nend\r\n"
    qid = queue_id_of(c.send_message("a@b.test", ["u@example.org"], body))
    assert relayd.queue.message(qid)["body"].endswith(body)


def test_max_errors(relayd_factory):
    """relayd(8): the session that had max_errors protocol errors gets the 421:
    the third error's own reply, then the 421, then the close."""
    r = relayd_factory(max_errors=3)
    c = r.raw()
    c.ehlo()
    for _ in range(2):
        assert c.cmd("BOGUS").line == "500 5.5.2 Error: command not recognized"
    c.send("BOGUS\r\n")
    assert [x.line for x in c.replies(2)] == ["500 5.5.2 Error: command not recognized",
                                              "421 4.7.0 relay.test Error: too many errors"]
    assert c.at_eof()


def test_max_errors_counts_refused_recipients(relayd_factory):
    """Harvesting: 5xx replies to RCPT are errors too."""
    r = relayd_factory(max_errors=3)
    c = r.raw()
    c.ehlo()
    c.expect("MAIL FROM:<a@b.test>", 250)
    codes = []
    for i in range(6):
        try:
            rep = c.cmd("RCPT TO:<u%d@evil.test>" % i)
        except (EOFError, BrokenPipeError, ConnectionResetError):
            break
        codes.append(rep.code)
        if rep.code == 421:
            break
    assert codes[-1] == 421, codes
    assert c.at_eof()
