# test_memory_bounds: relayd(8) promises bounded memory per client: a message
# body past 128 KiB goes to a spool file and into the queue 64 KiB at a time,
# a body over the size limit is discarded as it comes, and a client that
# sends commands without ever reading its replies is disconnected once its
# reply backlog is full, its input never read without bound. Each is checked
# on the daemon's own peak resident size (VmHWM in /proc) against the bytes
# the client sent. Sanitizer builds get a small allocator quarantine, so
# freed buffers are reused as in a plain build.

import os
import socket

from relayd_fixture import queue_id_of, split_received

MB = 1024 * 1024


def small_quarantine():
    asan = os.environ.get("ASAN_OPTIONS", "")
    return {"ASAN_OPTIONS": (asan + ":" if asan else "") + "quarantine_size_mb=1"}


def vm_hwm(pid):
    """Peak resident set size of pid, in bytes."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM for pid %d" % pid)


def warm_up(r):
    """One message through every path first, so the baseline has the code and
    the caches a session needs."""
    c = r.raw()
    c.ehlo()
    queue_id_of(c.send_message("a@b.test", ["u@example.org"], b"Subject: warm\r\n\r\n" + b"x" * 200000 + b"\r\n"))
    c.cmd("QUIT")
    return vm_hwm(r.pid)


def send_body(c, size):
    line = b"b" * 1022 + b"\r\n"
    chunk = line * 64
    sent = 0
    while sent < size:
        c.send(chunk)
        sent += len(chunk)
    c.send(b".\r\n")
    return sent


def test_huge_body_is_not_held_in_memory(relayd_factory):
    r = relayd_factory(max_message_size="64M", env=small_quarantine())
    base = warm_up(r)
    c = r.raw(timeout=120)
    c.ehlo()
    c.expect("MAIL FROM:<a@b.test>", 250)
    c.expect("RCPT TO:<u@example.org>", 250)
    c.expect("DATA", 354)
    sent = send_body(c, 40 * MB)
    qid = queue_id_of(c.reply(timeout=120))
    _, body = split_received(r.queue.message(qid)["body"])
    assert len(body) == sent
    grew = vm_hwm(r.pid) - base
    assert grew < 12 * MB, "a %d MB message raised relayd's peak RSS by %.1f MB" % (sent // MB, grew / MB)


def test_body_over_the_limit_is_discarded_as_it_comes(relayd_factory):
    r = relayd_factory(max_message_size="1M", env=small_quarantine())
    base = warm_up(r)
    c = r.raw(timeout=120)
    c.ehlo()
    c.expect("MAIL FROM:<a@b.test>", 250)
    c.expect("RCPT TO:<u@example.org>", 250)
    c.expect("DATA", 354)
    send_body(c, 30 * MB)
    assert c.reply(timeout=120).line == "552 5.3.4 Message size exceeds fixed limit"
    grew = vm_hwm(r.pid) - base
    assert grew < 8 * MB, "30 MB over the limit raised relayd's peak RSS by %.1f MB" % (grew / MB)


def test_client_that_never_reads_is_disconnected(relayd_factory):
    r = relayd_factory(env=small_quarantine())
    base = warm_up(r)
    c = r.raw(timeout=10)
    c.ehlo()
    port = c.sock.getsockname()[1]
    chunk = b"NOOP\r\n" * 10000
    sent, dropped = 0, None
    c.sock.settimeout(30)
    # bounded: 1000 chunks are 60 MB, far more than the kernel buffers, the
    # 1 MiB reply backlog and the 256 KiB input bound together
    for _ in range(1000):
        try:
            c.sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError) as e:
            dropped = e
            break
        sent += len(chunk)
    assert dropped is not None, "still connected after %d MB of commands with no reply read" % (sent // MB)
    r.wait_log(r"write to unknown\[127\.0\.0\.1\]:%d failed: output backlog" % port, timeout=30)
    grew = vm_hwm(r.pid) - base
    assert grew < 8 * MB, "a client that never reads raised relayd's peak RSS by %.1f MB" % (grew / MB)
    # others are served
    c2 = r.raw()
    c2.ehlo()
    queue_id_of(c2.send_message("a@b.test", ["u@example.org"], b"Subject: after\r\n\r\nok\r\n"))
