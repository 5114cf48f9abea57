# test_notify: telling a held domain's site that mail is waiting (issue 8).
# notify_command runs once when the queue goes from empty to non-empty (not
# once per message), with RELAYD_DOMAIN/MESSAGES/BYTES/OLDEST and nothing of
# relayd's environment, then again at most every notify_interval while mail
# waits, and again after the queue emptied and refilled; notify = ADDRESS
# queues a message from <> to that address; relayd -t refuses a notify
# address in a held domain (the notification would wait beside the mail).
# For a domain with a quota, the command gets RELAYD_QUOTA_PERCENT and the
# message says when the domain is over 80 % of its quota (issue 11).

import os
import re
import time

from relayd_fixture import run_relayd, wait_until
from sink import Client, etrn, message, subject_of

ANNOUNCE = r"notify: example\.org: (\d+) messages? \(\d+ bytes\) waiting$"
REMINDER = r"notify: example\.org: \d+ messages? \(\d+ bytes\) waiting \(reminder\)"


def command(tmp_path):
    out = tmp_path / "notified"
    script = tmp_path / "notify.sh"
    script.write_text("#!/bin/sh\n{ env | sort | tr '\\n' ' '; echo; } >> %s\n" % out)
    os.chmod(script, 0o755)
    return str(script), out


def runs(out):
    if not out.exists():
        return []
    return [dict(kv.split("=", 1) for kv in l.split()) for l in out.read_text().splitlines()]


def test_notify_command_once_then_reminders_then_rearmed(denv, tmp_path):
    site = denv.sink("site")
    script, out = command(tmp_path)
    r = denv.relayd(domains={"example.org": {"mode": "hold", "route": "127.0.0.1:%d" % site.port}},
                    notify_command=script, notify_interval="3s",
                    env={"SECRET_OF_RELAYD": "must not leak"})
    with Client(r) as c:
        for i in range(3):
            c.send("s@sender.test", ["u%d@example.org" % i], message("m%d" % i))
    r.wait_log(ANNOUNCE)
    wait_until(lambda: len(runs(out)) == 1, 10, what="the command's first run")
    env = runs(out)[0]
    assert env["RELAYD_DOMAIN"] == "example.org"
    assert 1 <= int(env["RELAYD_MESSAGES"]) <= 3
    assert int(env["RELAYD_BYTES"]) > 0 and int(env["RELAYD_OLDEST"]) <= time.time()
    assert "SECRET_OF_RELAYD" not in env, env  # no shell, no inherited environment
    # mail keeps waiting: one reminder after notify_interval, not one per message
    r.wait_log(REMINDER, timeout=15)
    wait_until(lambda: len(runs(out)) == 2, 10, what="the reminder's run")
    assert runs(out)[1]["RELAYD_MESSAGES"] == "3"
    assert len(re.findall(ANNOUNCE, r.log_text(), re.M)) == 1

    # the site takes its mail; the queue empties; new mail is news again
    assert etrn(r, "example.org")[0] == 253
    site.wait_for(3, 20)
    wait_until(lambda: r.queue.count() == 0, 20, what="the queue to empty")
    r.wait_log(r"notify: example\.org: nothing waits any more", timeout=10)
    off = r.log_size()
    with Client(r) as c:
        c.send("s@sender.test", ["u@example.org"], message("again"))
    r.wait_log(ANNOUNCE, since=off)
    wait_until(lambda: len(runs(out)) == 3, 10, what="the command's third run")
    assert runs(out)[2]["RELAYD_MESSAGES"] == "1"


def test_notify_address_gets_a_message_from_the_null_sender(denv, tmp_path):
    admin = denv.sink("admin")
    r = denv.relayd(domains={"example.org": {"mode": "hold", "notify": "Admin@Mobile.Test"},
                             "mobile.test": {"mode": "retry",
                                             "route": "127.0.0.1:%d" % admin.port}})
    with Client(r) as c:
        c.send("s@sender.test", ["u@example.org"], message("held"))
        c.send("s@sender.test", ["v@example.org"], message("held2"))
    admin.wait_for(1, 20)
    t = admin.transactions[0]
    assert t.mail_from == "" and t.rcpt_addrs == ["Admin@mobile.test"], t
    assert subject_of(t.data) in ("1 message waiting for example.org at relay.test",
                                  "2 messages waiting for example.org at relay.test")
    assert b"Auto-Submitted: auto-generated\r\n" in t.data
    r.wait_log(r"notification to <Admin@mobile\.test> that mail waits for example\.org")
    # the held mail itself stays
    assert r.queue.query("SELECT count(*) AS n FROM recipient WHERE domain = 'example.org'")[0]["n"] == 2


def test_notify_address_in_a_held_domain_is_refused(tmp_path):
    conf = tmp_path / "relayd.conf"
    conf.write_text("hostname = relay.test\ndatabase = %s/q.db\ncontrol_socket =\n"
                    "[domain example.org]\nnotify = admin@example.net\n"
                    "[domain example.net]\nmode = hold\n" % tmp_path)
    p = run_relayd(["-t", "-f", str(conf)])
    assert p.returncode != 0
    assert b"notify = admin@example.net: example.net is held here itself" in p.stderr, p.stderr
    conf.write_text("hostname = relay.test\ndatabase = %s/q.db\ncontrol_socket =\n"
                    "[domain example.org]\nnotify = admin@example.net\n" % tmp_path)
    p = run_relayd(["-t", "-f", str(conf)])
    assert p.returncode == 0, p.stderr


def test_shutdown_ends_a_running_notify_command(denv, tmp_path):
    # relayd stopping asks a command still running to end (SIGTERM) instead
    # of leaving it to the 30 s kill
    started, termed = tmp_path / "started", tmp_path / "termed"
    script = tmp_path / "slow.sh"
    script.write_text("#!/bin/sh\ntrap 'echo term > %s; exit 0' TERM\necho up > %s\n"
                      "sleep 60 &\nwait\n" % (termed, started))
    os.chmod(script, 0o755)
    r = denv.relayd(domains={"example.org": {"mode": "hold"}}, notify_command=str(script))
    with Client(r) as c:
        c.send("s@sender.test", ["u@example.org"], message("m"))
    wait_until(started.exists, 10, what="the command to start")
    r.signal(__import__("signal").SIGTERM)
    wait_until(termed.exists, 20, what="the command to get SIGTERM")
    assert r.wait_exit(30) == 0, r.log_tail()


def body_of(data):
    return data.split(b"\r\n\r\n", 1)[1].decode()


def test_notification_says_when_the_quota_is_over_80_percent(denv, tmp_path):
    # example.org may hold 5 messages: the first announcement (1 of 5, 20 %)
    # carries the percentage for the command but no warning in the message;
    # with 5 waiting the reminder says 100 % in both
    admin = denv.sink("admin")
    script, out = command(tmp_path)
    r = denv.relayd(domains={"example.org": {"mode": "hold", "notify": "admin@mobile.test",
                                             "max_queue_messages": "5",
                                             "max_queue_bytes": "1000000"},
                             "quiet.test": {"mode": "hold"},
                             "mobile.test": {"mode": "retry",
                                             "route": "127.0.0.1:%d" % admin.port}},
                    notify_command=script, notify_interval="2s")
    with Client(r) as c:
        c.send("s@sender.test", ["u0@example.org"], message("m0"))
    admin.wait_for(1, 20)
    wait_until(lambda: len(runs(out)) == 1, 10, what="the command's first run")
    assert runs(out)[0]["RELAYD_QUOTA_PERCENT"] == "20", runs(out)
    first = body_of(admin.transactions[0].data)
    assert "1 message (" in first and "quota" not in first, first

    with Client(r) as c:
        for i in range(1, 5):
            c.send("s@sender.test", ["u%d@example.org" % i], message("m%d" % i))
    wait_until(lambda: any(e["RELAYD_MESSAGES"] == "5" for e in runs(out)), 20,
               what="a reminder with 5 messages waiting")
    full = [e for e in runs(out) if e["RELAYD_MESSAGES"] == "5"][0]
    assert full["RELAYD_QUOTA_PERCENT"] == "100", full
    wait_until(lambda: any("5 messages (" in body_of(t.data) for t in admin.transactions), 20,
               what="a notification mail with 5 messages waiting")
    body = [body_of(t.data) for t in admin.transactions if "5 messages (" in body_of(t.data)][0]
    assert ("example.org is at 100% of its queue quota here (max_queue_messages = 5,\r\n"
            "max_queue_bytes = 1000000; 0 is no limit). Once it is full, new\r\n"
            "mail for it is refused (452 4.2.2) until the site collects.\r\n") in body, body

    # a held domain without a quota: no RELAYD_QUOTA_PERCENT at all
    with Client(r) as c:
        c.send("s@sender.test", ["u@quiet.test"], message("q"))
    wait_until(lambda: any(e["RELAYD_DOMAIN"] == "quiet.test" for e in runs(out)), 10,
               what="the command's run for quiet.test")
    quiet = [e for e in runs(out) if e["RELAYD_DOMAIN"] == "quiet.test"][0]
    assert "RELAYD_QUOTA_PERCENT" not in quiet, quiet
