# test_systemd_notify: the sd_notify messages contrib/relayd.service
# (Type=notify) relies on, read from $NOTIFY_SOCKET as systemd would, on a
# unix datagram socket the test binds: READY=1 once relayd listens,
# RELOADING=1 (with MONOTONIC_USEC) and READY=1 around each reload, good or
# bad, and STOPPING=1 when SIGTERM starts the shutdown (relayd(8) ENVIRONMENT).

import os
import shutil
import signal
import socket
import tempfile
import time

import pytest


@pytest.fixture
def notify_socket():
    d = tempfile.mkdtemp(prefix="relayd-notify-", dir="/tmp")  # sun_path is short
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = os.path.join(d, "notify")
    s.bind(path)
    s.settimeout(15)
    yield s, path
    s.close()
    shutil.rmtree(d, ignore_errors=True)


def messages(sock):
    """The next datagram as a dict of its KEY=VALUE lines."""
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.split("\n") if line)


def test_ready_reloading_stopping(relayd_factory, notify_socket):
    sock, path = notify_socket
    r = relayd_factory(env={"NOTIFY_SOCKET": path})
    assert messages(sock) == {"READY": "1"}
    # it answers by then (the fixture waited for the ready line)
    assert r.raw().greeting.code == 220

    # a good reload: RELOADING=1 with the time it started, then READY=1
    before = time.clock_gettime(time.CLOCK_MONOTONIC)
    off = r.reload()
    m = messages(sock)
    after = time.clock_gettime(time.CLOCK_MONOTONIC)
    assert set(m) == {"RELOADING", "MONOTONIC_USEC"} and m["RELOADING"] == "1", m
    assert before * 1e6 <= int(m["MONOTONIC_USEC"]) <= after * 1e6, (before, m, after)
    assert messages(sock) == {"READY": "1"}
    r.wait_log(r"configuration reloaded from ", since=off)

    # a bad one: the old configuration stays, and systemd is told it is over
    with open(r.conf, "a") as f:
        f.write("no_such_key = 1\n")
    off = r.reload()
    assert messages(sock)["RELOADING"] == "1"
    assert messages(sock) == {"READY": "1"}
    r.wait_log(r"warning: reload failed: .*keeping the old configuration", since=off)

    off = r.log_size()
    r.signal(signal.SIGTERM)
    assert messages(sock) == {"STOPPING": "1"}
    assert r.wait_exit(30) == 0
    r.wait_log(r"relayd stopping", since=off)
