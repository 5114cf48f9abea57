# test_etrn_auth: ETRN with etrn_access = auth (issue 8) against the real
# relayd, the site played by a recording sink: unauthenticated 530, another
# account 459, the owning account the usual 253 with the true count and its
# mail delivered (and only its own); with auth in the global etrn_access,
# 530 for every unauthenticated ETRN, even for names that are not ours.

import base64
import hashlib
import hmac
import os

from sink import Client, message

CREDS = "site1:{plain}pw-one:example.org\nsite2:{plain}pw-two:other.test\n"


def creds_file(tmp_path):
    p = tmp_path / "credentials"
    p.write_text(CREDS)
    os.chmod(str(p), 0o600)
    return str(p)


def login(c, user, pw):
    """CRAM-MD5 on a RawSMTP (no TLS needed)."""
    ch = c.expect("AUTH CRAM-MD5", 334).texts[0]
    digest = hmac.new(pw.encode(), base64.b64decode(ch), hashlib.md5).hexdigest()
    c.expect(base64.b64encode(("%s %s" % (user, digest)).encode()).decode(), 235)


def test_etrn_needs_the_owning_account(denv, tmp_path):
    site = denv.sink("site", start=False)
    other = denv.sink("other", start=False)
    r = denv.relayd(credentials=creds_file(tmp_path),
                    domains={"example.org": {"mode": "hold", "route": "127.0.0.1:%d" % site.port,
                                             "etrn_access": "auth"},
                             "other.test": {"mode": "hold", "route": "127.0.0.1:%d" % other.port,
                                            "etrn_access": "auth, 192.0.2.0/24"},
                             "open.test": {"mode": "hold"}})
    with Client(r) as c:
        for i in range(3):
            c.send("s@sender.test", ["u%d@example.org" % i], message("ex%d" % i))
        c.send("s@sender.test", ["w@other.test"], message("ot"))
    site.start()
    other.start()

    anon = r.raw()
    anon.ehlo()
    rep = anon.expect("ETRN example.org", 530)
    assert rep.line == "530 5.7.0 Authentication required", rep
    anon.expect("ETRN @example.org", 530)
    # a domain without auth in its etrn_access is still anyone's
    anon.expect("ETRN open.test", 251)

    wrong = r.raw()
    wrong.ehlo()
    login(wrong, "site2", "pw-two")
    rep = wrong.expect("ETRN example.org", 459)
    assert rep.line.startswith("459 4.7.1"), rep
    # its own domain: 253 with the true count
    rep = wrong.expect("ETRN other.test", 253)
    assert rep.line == "253 2.0.0 1 pending messages for node <other.test> started", rep

    owner = r.raw()
    owner.ehlo()
    login(owner, "site1", "pw-one")
    rep = owner.expect("ETRN example.org", 253)
    assert rep.line == "253 2.0.0 3 pending messages for node <example.org> started", rep
    site.wait_for(3, 30, "example.org's three messages")
    other.wait_for(1, 30, "other.test's message")
    assert sorted(t.rcpt_addrs[0] for t in site.received()) == ["u0@example.org", "u1@example.org",
                                                                 "u2@example.org"]
    log = r.log_text()
    assert "arg=<example.org> result=530 count=0 reason=authentication required" in log
    assert "arg=<example.org> result=459 count=0 sasl_username=site2 reason=" in log
    assert "arg=<example.org> result=253 count=3 sasl_username=site1" in log


def test_global_auth_answers_530_whatever_the_name(denv, tmp_path):
    r = denv.relayd(credentials=creds_file(tmp_path), etrn_access="auth",
                    domains={"example.org": {"mode": "hold"}, "open.test": {"etrn_access": "any"}})
    anon = r.raw()
    anon.ehlo()
    for arg in ("example.org", "notours.test", "open.test", "#nosuch", "@example.org"):
        rep = anon.expect("ETRN " + arg, 530)
        assert rep.line == "530 5.7.0 Authentication required", (arg, rep)
    c = r.raw()
    c.ehlo()
    login(c, "site2", "pw-two")
    c.expect("ETRN notours.test", 459)  # now it may learn what is not ours
    c.expect("ETRN example.org", 459)
    c.expect("ETRN open.test", 251)
    c2 = r.raw()
    c2.ehlo()
    login(c2, "site1", "pw-one")
    c2.expect("ETRN example.org", 251)
