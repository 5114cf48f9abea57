# test_auth: SMTP AUTH (RFC 4954) against the real relayd with real clients:
# swaks (PLAIN after STARTTLS, LOGIN, CRAM-MD5), Python smtplib, msmtp
# (SCRAM-SHA-256 and PLAIN); each reply code (235 334 501 503 504 534 535
# 538 454, 421 past auth_fail_limit); PLAIN/LOGIN never offered or taken
# before TLS; the failure log line as fail2ban's postfix-sasl filter reads
# it; SIGHUP re-reading the accounts; and the hash checks running off the
# loop (a hundred slow bcrypt checks in flight while another client's
# message gets its 250).

import base64
import hashlib
import hmac
import os
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import time

import pytest

from relayd_fixture import RawSMTP, make_message, queue_id_of, wait_until

PW1, PW2, PW3 = "s3cret", "pw2-yescrypt", "pw3-scram"


def mkpasswd(method, pw, rounds=None):
    args = ["mkpasswd", "-m", method] + (["-R", str(rounds)] if rounds else []) + ["--stdin"]
    return subprocess.run(args, input=pw.encode(), stdout=subprocess.PIPE, check=True, timeout=60).stdout.decode().strip()


def scram_keys(pw):
    out = subprocess.run(["gsasl", "--mkpasswd", "--mechanism", "SCRAM-SHA-256", "--password", pw],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=True, timeout=60)
    return out.stdout.decode().strip()


@pytest.fixture(scope="module")
def secrets():
    return {"yescrypt": mkpasswd("yescrypt", PW2), "scram": scram_keys(PW3),
            "scram_yescrypt": mkpasswd("yescrypt", PW3)}


def write_creds(path, secrets, extra=""):
    with open(path, "w") as f:
        f.write("# test accounts\n"
                "site1:{plain}%s:example.org\n"
                "site2:%s:sub.test\n"
                "site3:%s;%s:example.org\n"
                "broken:$9$unknown$scheme:example.org\n%s"
                % (PW1, secrets["yescrypt"], secrets["scram"], secrets["scram_yescrypt"], extra))
    os.chmod(path, 0o600)


def auth_relayd(relayd_factory, tls_cert, secrets, tmp_path, **kw):
    creds = str(tmp_path / "credentials")
    write_creds(creds, secrets)
    cert, key = tls_cert
    kw.setdefault("auth_fail_limit", "100/10m")
    r = relayd_factory(credentials=creds, tls_cert=cert, tls_key=key, **kw)
    r.creds = creds
    return r


def tls_ctx():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def ehlo_auth(rep):
    for t in rep.texts:
        if t.startswith("AUTH "):
            return t[5:].split()
    return None


def tls_raw(r):
    c = r.raw()
    c.ehlo()
    c.expect("STARTTLS", 220)
    c.start_tls(tls_ctx())
    return c


def swaks(r, *args, timeout=30):
    p = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % r.port, "--helo", "swaks.test",
                        "--quit-after", "AUTH", "--timeout", "20"] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    return p.returncode, p.stdout.decode(errors="replace")


# --- what is offered ---------------------------------------------------------------------


def test_ehlo_offers_plain_and_login_only_after_starttls(relayd_factory, tls_cert, secrets, tmp_path):
    r = auth_relayd(relayd_factory, tls_cert, secrets, tmp_path)
    c = r.raw()
    before = ehlo_auth(c.ehlo())
    assert before == ["SCRAM-SHA-256", "CRAM-MD5"], before
    # RFC 4954 §4 / §6: a password in clear is refused before TLS, 538
    rep = c.expect("AUTH PLAIN " + b64("\0site1\0" + PW1), 538)
    assert rep.line.startswith("538 5.7.11"), rep
    c.expect("AUTH LOGIN", 538)
    assert " AUTH;" in c.expect("HELP", 214).line
    c.expect("STARTTLS", 220)
    c.start_tls(tls_ctx())
    after = ehlo_auth(c.ehlo())
    # TLS 1.3: SCRAM-SHA-256-PLUS with tls-exporter channel binding (RFC 9266)
    assert after == ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "CRAM-MD5", "PLAIN", "LOGIN"], after
    # a client that says it could bind ("y") although -PLUS is offered has
    # been downgraded by someone in the middle (RFC 5802 §6): refused
    rep = c.expect("AUTH SCRAM-SHA-256 " + b64("y,,n=site3,r=0123456789abcdef"), 535)
    assert rep.line.startswith("535 5.7.8"), rep
    assert "auth_fail" not in r.log_text()


def test_no_auth_without_credentials_or_with_smtpd_auth_no(relayd_factory, tls_cert, secrets, tmp_path):
    r = relayd_factory()
    c = r.raw()
    assert ehlo_auth(c.ehlo()) is None
    c.expect("AUTH PLAIN AAAA", 502)
    r2 = auth_relayd(relayd_factory, tls_cert, secrets, tmp_path, smtpd_auth="no")
    c = r2.raw()
    assert ehlo_auth(c.ehlo()) is None
    c.expect("AUTH CRAM-MD5", 502)


# --- real clients ------------------------------------------------------------------------


def test_swaks_plain_login_cram_md5(relayd_factory, tls_cert, secrets, tmp_path):
    r = auth_relayd(relayd_factory, tls_cert, secrets, tmp_path)
    # PLAIN after STARTTLS against a yescrypt hash (the check runs on the auth thread)
    rc, out = swaks(r, "--tls", "--auth", "PLAIN", "--auth-user", "site2", "--auth-password", PW2)
    assert rc == 0 and "235 2.7.0 Authentication successful" in out, out
    rc, out = swaks(r, "--tls", "--auth", "LOGIN", "--auth-user", "site3", "--auth-password", PW3)
    assert rc == 0 and "235 2.7.0" in out, out
    # CRAM-MD5 needs no TLS, and works for {plain} accounts only
    rc, out = swaks(r, "--auth", "CRAM-MD5", "--auth-user", "site1", "--auth-password", PW1)
    assert rc == 0 and "235 2.7.0" in out, out
    rc, out = swaks(r, "--auth", "CRAM-MD5", "--auth-user", "site2", "--auth-password", PW2)
    assert "534 5.7.9" in out, out
    rc, out = swaks(r, "--tls", "--auth", "PLAIN", "--auth-user", "site2", "--auth-password", "nope")
    assert "535 5.7.8" in out, out
    log = r.log_text()
    assert "sasl_method=PLAIN, sasl_username=site2" in log
    assert "sasl_method=LOGIN, sasl_username=site3" in log
    assert "sasl_method=CRAM-MD5, sasl_username=site1" in log
    assert PW1 not in log and PW2 not in log and PW3 not in log


def test_python_smtplib_login(relayd_factory, tls_cert, secrets, tmp_path):
    r = auth_relayd(relayd_factory, tls_cert, secrets, tmp_path)
    s = smtplib.SMTP("127.0.0.1", r.port, local_hostname="client.test", timeout=20)
    s.starttls(context=tls_ctx())
    code, text = s.login("site2", PW2)  # smtplib picks PLAIN among PLAIN/LOGIN after TLS
    assert code == 235, text
    s.quit()
    s = smtplib.SMTP("127.0.0.1", r.port, local_hostname="client.test", timeout=20)
    with pytest.raises(smtplib.SMTPAuthenticationError) as e:
        s.login("site1", "wrong")  # CRAM-MD5 before TLS
    assert e.value.smtp_code == 535
    s.login("site1", PW1)
    s.quit()


def test_msmtp_scram_and_plain(relayd_factory, tls_cert, secrets, tmp_path):
    r = auth_relayd(relayd_factory, tls_cert, secrets, tmp_path)
    # msmtp --serverinfo authenticates only when sending; send a real message instead
    for user, pw, auth, tls in (("site3", PW3, "scram-sha-256", False), ("site2", PW2, "plain", True),
                                ("site1", PW1, "scram-sha-256", True)):
        conf = tmp_path / ("msmtprc-%s-%s" % (user, auth))
        conf.write_text("account default\nhost 127.0.0.1\nport %d\ntimeout 20\n"
                        "tls %s\ntls_starttls on\ntls_certcheck off\n"
                        "auth %s\nuser %s\npassword %s\nfrom sender@client.test\n"
                        % (r.port, "on" if tls else "off", auth, user, pw))
        os.chmod(conf, 0o600)
        msg = make_message(subject="msmtp %s" % auth)
        p = subprocess.run(["msmtp", "-C", str(conf), "--debug", "u@example.org"], input=msg,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        out = p.stdout.decode(errors="replace")
        assert p.returncode == 0, out
        assert "235 2.7.0" in out, out
        assert "sasl_method=%s, sasl_username=%s" % (auth.upper(), user) in r.log_text()
    # a SCRAM exchange with the wrong password fails without a 235
    conf = tmp_path / "msmtprc-bad"
    conf.write_text("account default\nhost 127.0.0.1\nport %d\ntimeout 20\ntls off\n"
                    "auth scram-sha-256\nuser site3\npassword wrong\nfrom sender@client.test\n" % r.port)
    os.chmod(conf, 0o600)
    p = subprocess.run(["msmtp", "-C", str(conf), "u@example.org"], input=make_message(),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    assert p.returncode != 0
    assert "535" in p.stdout.decode(errors="replace")


# --- each reply ----------------------------------------------------------------------------


def cram_response(user, pw, challenge_b64):
    ch = base64.b64decode(challenge_b64)
    return b64("%s %s" % (user, hmac.new(pw.encode(), ch, hashlib.md5).hexdigest()))


def test_reply_codes(relayd_factory, tls_cert, secrets, tmp_path):
    r = auth_relayd(relayd_factory, tls_cert, secrets, tmp_path)
    c = r.raw()
    c.expect("AUTH CRAM-MD5", 503)  # RFC 4954 §4: after EHLO only
    c.ehlo()
    c.expect("AUTH", 501)  # no mechanism
    rep = c.expect("AUTH NTLM", 504)
    assert rep.line.startswith("504 5.5.4"), rep
    # CRAM-MD5: 334 challenge, then "*" cancels with 501 5.0.0 (RFC 4954 §4)
    ch = c.expect("AUTH CRAM-MD5", 334)
    assert ch.texts[0] and base64.b64decode(ch.texts[0]).startswith(b"<")
    rep = c.expect("*", 501)
    assert rep.line.startswith("501 5.0.0"), rep
    # bad base64 in a response
    c.expect("AUTH CRAM-MD5", 334)
    rep = c.expect("not base64!", 501)
    assert rep.line.startswith("501 5.5.2"), rep
    # wrong password: 535 5.7.8
    ch = c.expect("AUTH CRAM-MD5", 334)
    rep = c.expect(cram_response("site1", "wrong", ch.texts[0]), 535)
    assert rep.line.startswith("535 5.7.8"), rep
    # right one: 235 2.7.0, then AUTH again is 503
    ch = c.expect("AUTH CRAM-MD5", 334)
    rep = c.expect(cram_response("site1", PW1, ch.texts[0]), 235)
    assert rep.line.startswith("235 2.7.0"), rep
    c.expect("AUTH CRAM-MD5", 503)
    # an account gains no right to relay (relayd(8) AUTHENTICATION)
    c.expect("MAIL FROM:<a@b.test>", 250)
    rep = c.expect("RCPT TO:<someone@elsewhere.test>", 550)
    assert rep.line.startswith("550 5.7.1"), rep
    c.expect("RSET", 250)
    # not inside a mail transaction (RFC 4954 §4)
    c2 = r.raw()
    c2.ehlo()
    # RFC 4954 §5: with AUTH offered, MAIL takes AUTH=<> (and ignores it)
    c2.expect("MAIL FROM:<a@b.test> AUTH=<>", 250)
    rep = c2.expect("AUTH CRAM-MD5", 503)
    assert "transaction" in rep.line, rep
    # a hash libxcrypt does not know: 454 4.7.0, a temporary failure
    t = tls_raw(r)
    t.ehlo()
    rep = t.expect("AUTH PLAIN " + b64("\0broken\0whatever"), 454)
    assert rep.line.startswith("454 4.7.0"), rep
    # a client-first mechanism without initial response gets an empty 334
    rep = t.expect("AUTH PLAIN", 334)
    assert rep.texts == [""], rep
    rep = t.expect(b64("\0site2\0" + PW2), 235)
    # an account authenticating as somebody else is refused
    t2 = tls_raw(r)
    t2.ehlo()
    t2.expect("AUTH PLAIN " + b64("site1\0site2\0" + PW2), 535)
    # LOGIN with the user name as initial response
    t2.expect("AUTH LOGIN " + b64("site2"), 334)
    t2.expect(b64(PW2), 235)


def test_failures_end_the_session_at_max_errors(relayd_factory, tls_cert, secrets, tmp_path):
    r = auth_relayd(relayd_factory, tls_cert, secrets, tmp_path, max_errors=3)
    c = r.raw()
    c.ehlo()
    for _ in range(2):
        ch = c.expect("AUTH CRAM-MD5", 334)
        c.expect(cram_response("site1", "wrong", ch.texts[0]), 535)
    ch = c.expect("AUTH CRAM-MD5", 334)
    c.send((cram_response("site1", "wrong", ch.texts[0]) + "\r\n").encode())
    assert c.reply().code == 535
    rep = c.reply()
    assert rep.code == 421, rep
    assert c.at_eof()


def test_auth_fail_limit_421_across_connections(relayd_factory, tls_cert, secrets, tmp_path):
    r = auth_relayd(relayd_factory, tls_cert, secrets, tmp_path, auth_fail_limit="3/10m")
    for i in range(3):
        c = r.raw()
        c.ehlo()
        ch = c.expect("AUTH CRAM-MD5", 334)
        c.expect(cram_response("site1", "wrong%d" % i, ch.texts[0]), 535)
        c.expect("QUIT", 221)
    # a fourth attempt from the same address: 421 and the connection closes,
    # even with the right password (as Postfix's anvil)
    c = r.raw()
    c.ehlo()
    rep = c.expect("AUTH CRAM-MD5", 421)
    assert rep.line.startswith("421 4.7.0"), rep
    assert c.at_eof()
    assert "too many failed authentications (auth_fail_limit)" in r.log_text()
    # the limit counts failures, not commands: a new relayd with a fresh
    # table lets the right password through
    assert r.log_text().count("SASL CRAM-MD5 authentication failed: authentication failure") == 3


def test_fail2ban_postfix_sasl_filter_matches(relayd_factory, tls_cert, secrets, tmp_path):
    if shutil.which("fail2ban-regex") is None:
        pytest.fail("fail2ban-regex is not installed (tools/install-deps.sh test installs fail2ban)")
    r = auth_relayd(relayd_factory, tls_cert, secrets, tmp_path)
    c = r.raw()
    c.ehlo()
    ch = c.expect("AUTH CRAM-MD5", 334)
    c.expect(cram_response("site1", "wrong", ch.texts[0]), 535)
    c.expect("AUTH SCRAM-SHA-256 " + b64("n,,n=site3,r=abcdefghijklmnop"), 334)
    c.expect(b64("c=biws,r=abcdefghijklmnopXXXX,p=AAAA"), 535)
    t = tls_raw(r)
    t.ehlo()
    t.expect("AUTH PLAIN " + b64("\0site2\0wrong"), 535)
    r.wait_log(r"SASL PLAIN authentication failed: ")
    lines = [l for l in r.log_text().splitlines() if "authentication failed:" in l]
    assert len(lines) == 3, lines
    for l in lines:
        assert re.search(r"relayd/smtpd\[\d+\]: warning: unknown\[127\.0\.0\.1\]: SASL [-A-Z0-9]+ authentication failed: ", l), l
    log = tmp_path / "mail.log"
    log.write_text("\n".join(lines) + "\n")
    # Debian's filter as shipped, with only the daemon name overridden
    # (relayd(8) gives this jail): PLAIN and CRAM-MD5 match
    p = subprocess.run(["fail2ban-regex", "--out", "ip", str(log), "postfix[mode=auth, _daemon=relayd/(?:smtpd|odmr)]"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    out = p.stdout.decode()
    assert out.split() == ["127.0.0.1"] * 2, out
    # the one-line filter of relayd(8) covers SCRAM too
    fdir = tmp_path / "filter.d"  # as /etc/fail2ban/filter.d: common.conf beside it
    fdir.mkdir()
    os.symlink("/etc/fail2ban/filter.d/common.conf", str(fdir / "common.conf"))
    filt = fdir / "relayd-sasl.conf"
    filt.write_text("[INCLUDES]\nbefore = common.conf\n[Definition]\n_daemon = relayd/(?:smtpd|odmr)\n"
                    "failregex = ^%(__prefix_line)swarning: [-._\\w]+\\[<HOST>\\]: SASL [-\\w]+ authentication failed:\n")
    p = subprocess.run(["fail2ban-regex", "--out", "ip", str(log), str(filt)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    out = p.stdout.decode()
    assert out.split() == ["127.0.0.1"] * 3, out


def test_sighup_rereads_accounts(relayd_factory, tls_cert, secrets, tmp_path):
    r = auth_relayd(relayd_factory, tls_cert, secrets, tmp_path)
    with open(r.creds, "a") as f:
        f.write("site9:{plain}new-one:example.org\n")
    off = r.reload()
    r.wait_log(r"configuration reloaded", since=off)
    c = r.raw()
    c.ehlo()
    ch = c.expect("AUTH CRAM-MD5", 334)
    c.expect(cram_response("site9", "new-one", ch.texts[0]), 235)


# --- the hash checks stay off the loop ------------------------------------------------------


@pytest.mark.time_limit(180)
def test_slow_hash_checks_do_not_delay_another_clients_250(relayd_factory, tls_cert, secrets, tmp_path):
    """A hundred bcrypt checks (cost 12) queue on the auth thread; meanwhile
    another client's message is accepted and committed. The order of events
    proves it: the 250 arrives while most checks have not answered yet."""
    slow = mkpasswd("bcrypt", "slowpw", rounds=12)
    creds = str(tmp_path / "credentials")
    write_creds(creds, secrets, extra="slow:%s:example.org\n" % slow)
    cert, key = tls_cert
    r = relayd_factory(credentials=creds, tls_cert=cert, tls_key=key, auth_fail_limit="1000/10m",
                       max_connections=300, max_connections_per_ip=300)
    clients = []
    for _ in range(100):
        t = tls_raw(r)
        t.ehlo()
        clients.append(t)
    line = ("AUTH PLAIN " + b64("\0slow\0slowpw") + "\r\n").encode()
    for t in clients:
        t.send(line)
    # the first check has finished: the worker is busy with the rest
    r.wait_log(r"sasl_method=PLAIN, sasl_username=slow", timeout=60)
    s = r.raw()
    s.ehlo()
    rep = s.send_message("a@b.test", ["u@example.org"], make_message(subject="not delayed"))
    assert rep.code == 250, rep
    qid = queue_id_of(rep)
    answered = r.log_text().count("sasl_username=slow")
    assert answered < 100, "all hundred checks ended before the 250: no proof of anything"
    assert r.queue.message(qid) is not None
    # the checks go on after the 250 (the thread was not stuck)
    wait_until(lambda: r.log_text().count("sasl_username=slow") >= answered + 2, 60,
               what="two more checks")
    for t in clients:
        t.abort()


def test_auth_fail_limit_counts_an_ipv6_64(relayd_factory, tls_cert, secrets, tmp_path):
    """An IPv6 client is counted by its /64 (ipv6_prefix_length), as the
    other per-client limits: new addresses of the same /64 do not reset it."""
    from test_ipv6_limits import NET_A, NET_B, private_network

    with private_network([NET_A + "1", NET_A + "2", NET_B + "1"]):
        creds = str(tmp_path / "credentials")
        write_creds(creds, secrets)
        r = relayd_factory(credentials=creds, listen_host="::1", auth_fail_limit="2/10m")
        for src in (NET_A + "1", NET_A + "2"):
            c = r.raw(source=src)
            c.ehlo()
            ch = c.expect("AUTH CRAM-MD5", 334)
            c.expect(cram_response("site1", "wrong", ch.texts[0]), 535)
            c.expect("QUIT", 221)
        c = r.raw(source=NET_A + "1")
        c.ehlo()
        c.expect("AUTH CRAM-MD5", 421)
        assert c.at_eof()
        # the neighbouring /64 is another client
        d = r.raw(source=NET_B + "1")
        d.ehlo()
        ch = d.expect("AUTH CRAM-MD5", 334)
        d.expect(cram_response("site1", PW1, ch.texts[0]), 235)
        assert "unknown[2001:db8:1:2::2]: SASL CRAM-MD5 authentication failed" in r.log_text()
