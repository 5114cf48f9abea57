# test_slowloris: a client that trickles cannot hold a connection slot.
# command_timeout is a deadline for a whole command line, not an idle timer
# that each byte re-arms; DATA must keep min_data_rate on average beyond the
# first data_timeout; session_timeout ends even a busy session. Each cut is
# a 421 4.4.2 with its reason, then the connection closes. Every trickle is
# bounded in count, so without the deadlines the test fails instead of hanging.

import time

from relayd_fixture import make_message, queue_id_of


def trickle(c, chunks, pause):
    """Send each chunk after `pause` seconds of silence from the server; stop at
    the first byte the server sends (or when it closes). Returns the number of
    chunks sent."""
    for i, chunk in enumerate(chunks):
        if not c.silent(pause):
            return i
        try:
            c.send(chunk)
        except (BrokenPipeError, ConnectionResetError):
            return i
    return len(chunks)


def expect_cut(c, reason):
    rep = c.reply(timeout=10)
    assert rep.code == 421, rep
    assert rep.line.startswith("421 4.4.2 relay.test Error: timeout exceeded: " + reason), rep
    assert c.at_eof(), "the connection stayed open after the 421"


def test_command_line_trickle_is_cut_at_the_deadline(relayd_factory):
    r = relayd_factory(command_timeout="2s")
    c = r.raw()
    c.ehlo()
    # one byte every 0.3 s: each byte used to re-arm the 2 s timer
    sent = trickle(c, [bytes([b]) for b in b"NOOP " + b"x" * 60], 0.3)
    assert sent < 61, "the server let a 66-byte command take %d bytes at 0.3 s each" % sent
    expect_cut(c, "no complete command in 2 s")
    r.wait_log(r"timeout after READY from \S+: no complete command in 2 s")
    # complete commands each get a fresh deadline: a slow but honest client lives
    c2 = r.raw()
    c2.ehlo()
    for _ in range(6):
        assert c2.silent(0.5)
        c2.expect("NOOP", 250)
    c2.expect("QUIT", 221)


def test_greeting_trickle_is_cut_too(relayd_factory):
    r = relayd_factory(command_timeout="2s")
    c = r.raw()
    sent = trickle(c, [bytes([b]) for b in b"EHLO " + b"y" * 60], 0.3)
    assert sent < 65, sent
    expect_cut(c, "no complete command in 2 s")


def test_data_below_min_data_rate_is_cut(relayd_factory):
    # 10 bytes every 0.3 s is about 33 bytes/s, far below the default 500
    r = relayd_factory(command_timeout="30s", data_timeout="1s")
    c = r.raw()
    c.ehlo()
    c.expect("MAIL FROM:<a@b.test>", 250)
    c.expect("RCPT TO:<u@example.org>", 250)
    c.expect("DATA", 354)
    sent = trickle(c, [b"slow line\n"] * 60, 0.3)
    assert sent < 60, "a 33 bytes/s DATA ran for %d chunks" % sent
    expect_cut(c, "DATA slower than 500 bytes/s")
    r.wait_log(r"timeout after DATA \(\d+ bytes\) from \S+: DATA slower than 500 bytes/s")
    assert r.queue.count() == 0


def test_data_at_min_data_rate_is_accepted(relayd_factory):
    # the same pace, faster than a lowered min_data_rate, for longer than
    # data_timeout: the rate is a floor, not a cap
    r = relayd_factory(command_timeout="30s", data_timeout="1s", min_data_rate="20")
    c = r.raw()
    c.ehlo()
    c.expect("MAIL FROM:<a@b.test>", 250)
    c.expect("RCPT TO:<u@example.org>", 250)
    c.expect("DATA", 354)
    c.send(make_message("paced"))
    assert trickle(c, [b"paced line\r\n"] * 8, 0.3) == 8
    c.send(b".\r\n")
    queue_id_of(c.reply())


def test_session_timeout_ends_a_busy_session(relayd_factory):
    r = relayd_factory(command_timeout="30s", session_timeout="2s")
    c = r.raw()
    c.ehlo()
    t_end = time.monotonic() + 20
    n = 0
    while time.monotonic() < t_end:
        assert c.silent(0.3) or c.buf.startswith(b"421"), c.buf
        if c.buf:
            break
        try:
            rep = c.cmd("NOOP")
        except (BrokenPipeError, ConnectionResetError, EOFError):
            break
        if rep.code == 421:
            c.buf = ("\r\n".join(rep.lines) + "\r\n").encode() + c.buf
            break
        assert rep.code == 250, rep
        n += 1
    expect_cut(c, "session longer than 2 s")
    r.wait_log(r"timeout after READY from \S+: session longer than 2 s")
    assert n >= 1
