# test_signals: SIGHUP swaps in a new valid config without a restart and keeps
# the old one when the new one is broken; SIGTERM stops accepting, tells idle
# sessions 421 4.3.2, lets a session in DATA finish (bounded by
# shutdown_timeout) and exits 0.

import signal
import socket
import time

from relayd_fixture import free_port, make_message, queue_id_of


def rcpt_code(r, addr):
    c = r.raw()
    c.ehlo()
    c.expect("MAIL FROM:<a@b.test>", 250)
    code = c.cmd("RCPT TO:<%s>" % addr).code
    c.cmd("QUIT")
    c.close()
    return code


def test_sighup_adds_domain(relayd):
    assert rcpt_code(relayd, "u@new.test") == 550
    pid = relayd.pid
    # a session that started before the reload keeps working
    old = relayd.raw()
    old.ehlo()
    relayd.domains["new.test"] = {"mode": "hold"}
    relayd.write_config()
    off = relayd.reload()
    relayd.wait_log(r"configuration reloaded", since=off)
    assert relayd.pid == pid and relayd.alive()
    assert rcpt_code(relayd, "u@new.test") == 250
    assert rcpt_code(relayd, "u@example.org") == 250
    old.expect("MAIL FROM:<a@b.test>", 250)
    old.expect("RCPT TO:<u@example.org>", 250)
    # and removing a domain works the same way
    del relayd.domains["new.test"]
    relayd.write_config()
    off = relayd.reload()
    relayd.wait_log(r"configuration reloaded", since=off)
    assert rcpt_code(relayd, "u@new.test") == 550


def test_sighup_broken_config_keeps_old(relayd):
    good = relayd.config_text()
    relayd.write_config(good + "[domain new.test]\nfrobnicate = yes\n")
    bad_line = len(good.splitlines()) + 2
    off = relayd.reload()
    m = relayd.wait_log(r"warning: reload failed: (\S+):(\d+): .*; keeping the old configuration", since=off)
    assert m.group(1) == relayd.conf and int(m.group(2)) == bad_line, m.group(0)
    assert relayd.alive()
    assert rcpt_code(relayd, "u@example.org") == 250
    assert rcpt_code(relayd, "u@new.test") == 550
    # a later good reload still works
    relayd.domains["new.test"] = {}
    relayd.write_config()
    off = relayd.reload()
    relayd.wait_log(r"configuration reloaded", since=off)
    assert rcpt_code(relayd, "u@new.test") == 250


def test_sighup_changed_limits_apply_to_new_sessions(relayd):
    relayd.keys["max_message_size"] = "64k"
    relayd.write_config()
    off = relayd.reload()
    relayd.wait_log(r"configuration reloaded", since=off)
    c = relayd.raw()
    assert "SIZE 65536" in c.ehlo().texts


def test_sighup_listen_change_needs_restart(relayd):
    """listen/database/user are fixed at start: a reload says so and keeps serving."""
    old_port = relayd.port
    relayd.keys["listen"] = "127.0.0.1:%d" % free_port()
    relayd.write_config()
    off = relayd.reload()
    relayd.wait_log(r"warning: .*listen.*restart|warning: .*restart.*listen", since=off)
    assert relayd.alive()
    relayd.port = old_port
    assert rcpt_code(relayd, "u@example.org") == 250


def test_sigterm_idle_session_gets_421_and_exit_0(relayd):
    c = relayd.raw()
    c.ehlo()
    c2 = relayd.raw()  # not even EHLO yet
    relayd.signal(signal.SIGTERM)
    for x in (c, c2):
        rep = x.reply(timeout=10)
        assert rep.line == "421 4.3.2 relay.test Service shutting down", rep
        assert x.at_eof()
    rc = relayd.wait_exit(15)
    assert rc == 0, (rc, relayd.log_tail())
    log = relayd.log_text()
    assert "relayd stopping" in log and "relayd stopped" in log, log[-2000:]


def _no_greeting(port):
    """True if a new connection is not served: refused, closed, or silent."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=2)
    except OSError:
        return True
    try:
        s.settimeout(1.0)
        data = s.recv(100)
        return not data.startswith(b"220")
    except (socket.timeout, OSError):
        return True
    finally:
        s.close()


def test_sigterm_lets_data_session_finish(relayd_factory):
    r = relayd_factory(shutdown_timeout="5s")
    idle = r.raw()
    idle.ehlo()
    c = r.raw()
    c.ehlo()
    c.expect("MAIL FROM:<a@b.test>", 250)
    c.expect("RCPT TO:<u@example.org>", 250)
    c.expect("DATA", 354)
    msg = make_message(subject="finishing during shutdown", body_lines=["first half"])
    c.send(msg[:30])
    off = r.log_size()
    r.signal(signal.SIGTERM)
    r.wait_log(r"relayd stopping", since=off)
    rep = idle.reply(timeout=5)
    assert rep.line.startswith("421 4.3.2"), rep
    assert _no_greeting(r.port), "relayd still accepts new sessions after SIGTERM"
    c.send(msg[30:] + b".\r\n")
    qid = queue_id_of(c.reply(timeout=10))
    # relayd(8) SIGTERM: "they get their reply and then the 421"
    assert c.reply(timeout=10).line == "421 4.3.2 relay.test Service shutting down"
    assert c.at_eof()
    rc = r.wait_exit(15)
    assert rc == 0, (rc, r.log_tail())
    assert r.queue.message(qid)["body"].endswith(msg)


def test_sigterm_data_session_bounded_by_shutdown_timeout(relayd_factory):
    r = relayd_factory(shutdown_timeout="1s")
    c = r.raw()
    c.ehlo()
    c.expect("MAIL FROM:<a@b.test>", 250)
    c.expect("RCPT TO:<u@example.org>", 250)
    c.expect("DATA", 354)
    c.send(b"Subject: never finished\r\n\r\nsome")
    off = r.log_size()
    r.signal(signal.SIGTERM)
    # the session that never finishes is dropped by the shutdown_timeout (not
    # by data_timeout, 5m by default, nor by the client going away)
    r.wait_log(r"shutdown: sessions still busy after shutdown_timeout; closing them", timeout=30, since=off)
    r.wait_log(r"shutdown: dropping session unknown\[127\.0\.0\.1\]:%d in state DATA" % c.sock.getsockname()[1],
               timeout=30, since=off)
    rc = r.wait_exit(30)
    assert rc == 0, (rc, r.log_tail())
    assert c.at_eof()
    r.wait_log(r"relayd stopped", since=off)
    assert r.queue.count() == 0


def test_restart_keeps_queue(relayd):
    c = relayd.raw()
    c.ehlo()
    qid = queue_id_of(c.send_message("a@b.test", ["u@example.org"], make_message()))
    c.close()
    relayd.restart()
    c = relayd.raw()
    c.ehlo()
    qid2 = queue_id_of(c.send_message("a@b.test", ["u@example.org"], make_message()))
    assert qid2 != qid
    assert relayd.queue.message(qid) is not None and relayd.queue.message(qid2) is not None
