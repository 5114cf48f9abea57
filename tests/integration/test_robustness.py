# test_robustness: a malformed byte stream (NULs, 8-bit garbage, 100k-byte lines,
# seeded random bytes, abrupt resets) from several connections at once costs
# only those connections: the daemon stays up and keeps queueing mail for others.

import socket
import threading
import time

from relayd_fixture import make_message, queue_id_of, seeded_random


def test_nul_in_command(relayd):
    c = relayd.raw()
    c.ehlo()
    rep = c.cmd(b"NO\x00OP")
    assert rep.line.startswith("500 5.5.2") and "bad character" in rep.line, rep
    # relayd(8): "a NUL or another control character in a command line"
    rep = c.cmd(b"MAIL FROM:<a\x00@b.test>")
    assert rep.line == "500 5.5.2 Error: bad character in command", rep
    rep = c.cmd(b"MAIL FROM:<a@b.test>\x01")
    assert rep.line == "500 5.5.2 Error: bad character in command", rep
    c.expect("NOOP", 250)
    c.expect("MAIL FROM:<a@b.test>", 250)


def test_8bit_in_command(relayd):
    c = relayd.raw()
    c.ehlo()
    rep = c.cmd(b"\xff\xfe\xfd\x80 garbage")
    assert rep.line == "500 5.5.2 Error: command not recognized", rep
    # SMTPUTF8 is not offered, so an 8-bit local part is no valid path
    rep = c.cmd(b"MAIL FROM:<\xc3\xa9@b.test>")
    assert rep.line == "501 5.1.7 Bad sender address syntax", rep
    c.expect("NOOP", 250)


def test_bare_lf_ends_a_command(relayd):
    """relayd(8): "a bare LF also ends a command line, and the CR before it is
    not part of the command": one reply per command, as for CRLF."""
    c = relayd.raw()
    c.ehlo()
    c.send(b"NOOP\nMAIL FROM:<a@b.test>\n")
    assert [r.line for r in c.replies(2)] == ["250 2.0.0 Ok", "250 2.1.0 Ok"]
    c.expect("NOOP", 250)


def _garbage_worker(port, rng_seed, idx, errors):
    import random

    rng = random.Random(rng_seed + idx)
    try:
        for round_ in range(4):
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
            except OSError as e:
                errors.append("connect %d: %r" % (idx, e))
                return
            s.settimeout(10)
            kind = (idx + round_) % 5
            try:
                if kind == 0:  # NULs and control characters in commands
                    s.sendall(b"EHLO \x00\x01\x02x\r\nMA\x00IL FROM:<a@b>\r\n\x00\x00\x00\r\n" * 20)
                elif kind == 1:  # 8-bit garbage lines
                    s.sendall(b"".join(bytes(rng.randrange(128, 256) for _ in range(rng.randrange(1, 300))) + b"\r\n"
                                       for _ in range(50)))
                elif kind == 2:  # 100k-byte lines, with and without CRLF, in a transaction too
                    s.sendall(b"EHLO x\r\n" + b"A" * 100000 + b"\r\n" + b"MAIL FROM:<" + b"b" * 100000 + b"@c>\r\n")
                    s.sendall(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.org>\r\nDATA\r\n")
                    s.sendall(b"Subject: x\r\n\r\n" + b"C" * 300000)  # never finished: reset below
                elif kind == 3:  # random bytes in random-sized writes
                    for _ in range(30):
                        s.sendall(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4000))))
                else:  # random bytes mid-DATA, then a reset
                    s.sendall(b"EHLO x\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.org>\r\nDATA\r\n")
                    s.sendall(bytes(rng.randrange(256) for _ in range(20000)))
                # read a little of whatever comes back, without caring what it is
                try:
                    s.settimeout(0.2)
                    s.recv(65536)
                except (socket.timeout, OSError):
                    pass
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server may drop a garbage connection: that is allowed
            finally:
                if rng.random() < 0.5:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                s.close()
    except Exception as e:  # noqa: BLE001 - reported to the main thread
        errors.append("worker %d: %r" % (idx, e))


def test_garbage_from_parallel_connections(relayd):
    rng, seed = seeded_random("test_garbage_from_parallel_connections")
    errors = []
    threads = [threading.Thread(target=_garbage_worker, args=(relayd.port, seed, i, errors)) for i in range(8)]
    for t in threads:
        t.start()
    # a well-behaved client is served while the garbage flows
    s = relayd.smtp(timeout=20)
    s.ehlo()
    s.mail("a@b.test")
    s.rcpt("u@example.org")
    code, text = s.data(make_message(subject="during garbage"))
    q1 = queue_id_of("%d %s" % (code, text.decode()))
    s.quit()
    for t in threads:
        t.join(60)
        assert not t.is_alive(), "garbage worker hung"
    assert not errors, errors
    assert relayd.alive(), "relayd died:\n" + relayd.log_tail()
    # and afterwards
    c = relayd.raw()
    c.ehlo()
    q2 = queue_id_of(c.send_message("a@b.test", ["u@example.org"], make_message(subject="after garbage")))
    c.expect("QUIT", 221)
    qids = {m["queue_id"] for m in relayd.queue.messages()}
    assert {q1, q2} <= qids
    # nothing from the garbage connections was queued (none of them sent a dot)
    assert len(qids) == 2, qids


def test_abrupt_disconnects(relayd):
    """Clients vanishing at every stage, with FIN or RST."""
    stages = [b"", b"EHLO x\r\n", b"EHLO x\r\nMAIL FROM:<a@b.test>\r\n",
              b"EHLO x\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.org>\r\nDATA\r\n",
              b"EHLO x\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.org>\r\nDATA\r\nSubject: x\r\n\r\nhalf"]
    for rst in (False, True):
        for st in stages:
            c = relayd.raw(greet=False)
            if st:
                c.send(st)
                time.sleep(0.05)
            if rst:
                c.abort()
            else:
                c.close()
    time.sleep(0.3)
    assert relayd.alive()
    c = relayd.raw()
    c.ehlo()
    queue_id_of(c.send_message("a@b.test", ["u@example.org"], make_message()))
    assert relayd.queue.count() == 1


def test_client_that_never_reads(relayd):
    """A client pipelining thousands of commands without reading replies must not
    make the daemon buffer without bound or stall others."""
    c = relayd.raw(timeout=5)
    c.ehlo()
    sent = 0
    c.sock.settimeout(3)
    try:
        for _ in range(2000):
            c.sock.sendall(b"NOOP " + b"n" * 400 + b"\r\n")
            sent += 1
    except (socket.timeout, BrokenPipeError, ConnectionResetError):
        pass  # the server stopped reading from us (backpressure) or dropped us: both fine
    other = relayd.raw()
    other.ehlo()
    queue_id_of(other.send_message("a@b.test", ["u@example.org"], make_message()))
    assert relayd.alive()
