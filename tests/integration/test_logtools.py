# test_logtools: relayd's syslog output read by the tools mail admins run on
# Postfix's (issue 9): pflogsumm reports the true counts of a scripted day,
# and fail2ban's stock postfix filter, with _daemon pointed at relayd as
# relayd(8) shows, matches every relay-denied and too-many-errors line. The
# log is relayd's real syslog(3) output (facility mail), captured through a
# private /dev/log (syslog_capture.py), not its -d stderr.

import base64
import os
import re
import shutil
import subprocess

from relayd_fixture import Relayd, wait_until
from sink import Client, etrn, message, subject_of
from syslog_capture import SyslogCapture, attach

LOG_MAIL = 2  # syslog facility mail (RFC 5424 §6.2.1)
# what relayd(8) tells operators to put in their jail: fail2ban's stock
# filter, with the daemon name relayd's lines carry
FAIL2BAN_FILTER = "postfix[_daemon=relayd/(?:smtpd|odmr), mode=more]"
FAIL2BAN_SASL = "postfix[_daemon=relayd/(?:smtpd|odmr), mode=auth]"


def route(sink):
    return "127.0.0.1:%d" % sink.port


def pflogsumm_totals(path):
    p = subprocess.run(["pflogsumm", "--syslog-name=relayd", "--problems-first", path],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    assert p.returncode == 0, p
    out = p.stdout.decode()
    tot = {}
    for key in ("received", "delivered", "deferred", "bounced", "rejected"):
        m = re.search(r"(?m)^\s+(\d+)\s+%s\b" % key, out)
        assert m, "pflogsumm printed no %s count:\n%s" % (key, out)
        tot[key] = int(m.group(1))
    m = re.search(r"(?m)^\s+\d+\s+deferred\s+\((\d+)\s+deferrals\)", out)
    tot["deferrals"] = int(m.group(1)) if m else 0
    return tot, out


def fail2ban_matched(path, filt):
    p = subprocess.run(["fail2ban-regex", "--print-all-matched", path, filt],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    out = p.stdout.decode()
    assert p.returncode == 0, out
    m = re.search(r"Lines: (\d+) lines, (\d+) ignored, (\d+) matched, (\d+) missed", out)
    assert m, out
    return int(m.group(3)), out


def test_pflogsumm_and_fail2ban_read_a_scripted_day(denv, tmp_path):
    for tool in ("pflogsumm", "fail2ban-regex", "unshare"):
        assert shutil.which(tool), "%s is not installed (tools/install-deps.sh test)" % tool
    cap = SyslogCapture(str(tmp_path / "syslog"))
    site = denv.sink("site")
    down = denv.sink("down", start=False)  # its port stays closed: connection refused
    picky = denv.sink("picky")
    picky.behaviour.rcpt = lambda a: (550, "5.1.1 no such user") if a.startswith("nobody@") else None
    back = denv.sink("back", start=False)
    creds = tmp_path / "credentials"
    creds.write_text("site1:{plain}right:example.org\n")
    os.chmod(str(creds), 0o640)
    r = Relayd(str(tmp_path / "relayd"), max_errors="3", credentials=str(creds), domains={
        "example.org": {"mode": "hold", "route": route(site)},
        "down.test": {"mode": "hold", "route": route(down)},
        "bounce.test": {"mode": "hold", "route": route(picky)},
        "back.test": {"mode": "hold", "route": route(back)}})
    attach(r, cap)
    try:
        r.start()
        with Client(r) as c:
            for i in range(3):
                c.send("a@sender.test", ["u%d@example.org" % i], message("ok%d" % i))
            for i in range(2):
                c.send("a@sender.test", ["x%d@down.test" % i], message("down%d" % i))
            c.send("s@back.test", ["nobody@bounce.test"], message("bounce"))
        # two relay attempts, refused at RCPT
        raw = r.raw()
        raw.ehlo()
        raw.expect("MAIL FROM:<spam@evil.test>", 250)
        for victim in ("a@evil.test", "b@evil.test"):
            rep = raw.cmd("RCPT TO:<%s>" % victim)
            assert rep.line.startswith("550 5.7.1 <%s>: Relay access denied" % victim), rep
        raw.expect("QUIT", 221)
        # a wrong password (CRAM-MD5 works before TLS for {plain} accounts)
        sasl = r.raw()
        sasl.ehlo()
        sasl.expect("AUTH CRAM-MD5", 334)
        rep = sasl.cmd(base64.b64encode(b"site1 0123456789abcdef0123456789abcdef").decode())
        assert rep.line.startswith("535 5.7.8"), rep
        sasl.expect("QUIT", 221)
        # a client that only errs is cut off after max_errors
        bad = r.raw()
        bad.ehlo()
        for _ in range(3):
            assert bad.cmd("FROB").code == 500
        assert bad.reply(timeout=10).line == "421 4.7.0 relay.test Error: too many errors"
        assert bad.at_eof(10)

        assert etrn(r, "example.org")[0] == 253
        assert sorted(subject_of(t.data) for t in site.wait_for(3, 30)) == ["ok0", "ok1", "ok2"]
        assert etrn(r, "down.test")[0] == 253
        r.wait_log(r"down\.test: delivery deferred \(", timeout=60)
        assert etrn(r, "bounce.test")[0] == 253
        r.wait_log(r"to=<nobody@bounce\.test>, relay=\S+, delay=[\d.]+, delays=[\d./]+, dsn=5\.1\.1, "
                   r"status=bounced ", timeout=30)
        r.wait_log(r"sender non-delivery notification: \w+", timeout=30)
        # every delivered message has left the queue, and the log says so
        wait_until(lambda: len(re.findall(r": removed$", r.log_text(), re.M)) >= 4, 30,
                   what="'removed' for the 3 delivered and the bounced message")
    finally:
        if r.alive():
            r.stop()
        cap.close()

    log = cap.text()
    assert cap.facilities == {LOG_MAIL}, cap.facilities
    assert not cap.bad, cap.bad[:3]
    # every line is tagged relayd/<service>[pid], as postfix/<service>[pid]
    for line in log.splitlines():
        assert re.match(r"^\w{3} [ \d]\d \d\d:\d\d:\d\d testhost relayd/[a-z]+\[\d+\]: ", line), line

    tot, report = pflogsumm_totals(cap.path)
    # 6 messages came in over SMTP; 3 delivered; 1 bounced; 2 relay attempts
    # refused. All six are for hold domains: each is deferred at arrival
    # (waiting for ETRN), and the two for down.test once more when the ETRN
    # found their site down.
    assert tot == {"received": 6, "delivered": 3, "deferred": 6, "bounced": 1, "rejected": 2,
                   "deferrals": 8}, report

    matched, out = fail2ban_matched(cap.path, FAIL2BAN_FILTER)
    denied = len(re.findall(r"NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.1\]:\d+: 550 5\.7\.1 ", log))
    errors = len(re.findall(r"too many errors after \S+ from unknown\[127\.0\.0\.1\]:\d+$", log, re.M))
    assert (denied, errors) == (2, 1), log
    assert matched == denied + errors, out
    # and the postfix-sasl jail's filter (mode auth) the failed AUTH
    sasl_failed = len(re.findall(r"relayd/smtpd\[\d+\]: warning: unknown\[127\.0\.0\.1\]: SASL CRAM-MD5 "
                                 r"authentication failed: ", log))
    assert sasl_failed == 1, log
    matched, out = fail2ban_matched(cap.path, FAIL2BAN_SASL)
    assert matched == sasl_failed, out
