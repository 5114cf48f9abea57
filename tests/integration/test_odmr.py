# test_odmr: relayd as an On-Demand Mail Relay provider (RFC 2645) and
# etrnctl atrn as the customer, against the real daemon. The ODMR port's
# replies (EHLO keywords, 502 for mail commands, 530/450/451/453 to ATRN,
# 530 for AUTH before TLS under odmr_require_tls); a turn delivers exactly
# the requested domains' mail, byte for byte, through etrnctl atrn into a
# recording sink; a customer dropping after 2 of 5 messages leaves 3 queued
# that arrive once on the next ATRN; ATRN racing a running ETRN flush gets
# 451; TLS negotiated before ATRN carries the turn; route = odmr never makes
# a connection and refuses ETRN; fetchmail's ODMR client pulls into a sink;
# etrnctl atrn killed mid-transfer loses nothing; etrnctl atrn pulls into
# a private Postfix and a private Exim 4.96 (exim_site.py) as the site's MTA.

import json
import os
import re
import signal
import subprocess
import time

import pytest

from odmr_customer import Customer
from relayd_fixture import free_port, wait_until
from sink import Client, etrn, message, subject_of
from test_etrnctl import etrnctl_binary

EX_TEMPFAIL, EX_NOPERM = 75, 77
USER, PASSWORD = "acme", "s3cret pass"
ENDED_LOG = r"ATRN turn with unknown\[127\.0\.0\.1\]:\d+ ended: account=<acme> delivered=%d "
TURN_LOG = r"ATRN from unknown\[127\.0\.0\.1\]:\d+: account=<%s> arg=<%s> result=%d"


class Odmr:
    """relayd with an ODMR port and an account owning example.org and
    b.example (not other.test), plus a sink as the site's MTA."""

    def __init__(self, denv, tmp, domains=None, **keys):
        self.tmp = tmp
        self.creds = str(tmp / "credentials")
        with open(self.creds, "w") as f:
            f.write("%s:{plain}%s:example.org,b.example\n" % (USER, PASSWORD))
            f.write("other:{plain}other:other.test\n")
        os.chmod(self.creds, 0o600)
        self.pwfile = str(tmp / "password")
        with open(self.pwfile, "w") as f:
            f.write(PASSWORD + "\n")  # the line end is not part of it
        self.odmr_port = free_port()
        self.site = denv.sink("site")
        self.pushed = denv.sink("pushed")  # where a push (ETRN) of other.test goes
        doms = domains or {
            "example.org": {"route": "odmr"},
            "b.example": {"route": "odmr"},
            "other.test": {"route": "127.0.0.1:%d" % self.pushed.port},
        }
        self.r = denv.relayd(domains=doms, credentials=self.creds,
                             odmr_listen="127.0.0.1:%d" % self.odmr_port, **keys)

    def customer(self, auth=True):
        c = Customer(self.odmr_port)
        c.ehlo()
        if auth:
            r = c.auth_cram_md5(USER, PASSWORD)
            assert r.code == 235, r
        return c

    def atrn(self, *domains, extra=(), deliver_to=None, timeout=60):
        args = [etrnctl_binary(), "atrn", "--json", "-H", "127.0.0.1:%d" % self.odmr_port,
                "--user", USER, "--password-file", self.pwfile,
                "--deliver-to", deliver_to or self.site.address] + list(extra) + list(domains)
        env = dict(os.environ, ETRNCTL_DEFAULTS=str(self.tmp / "no-defaults"))
        with open(env["ETRNCTL_DEFAULTS"], "w") as f:
            f.write("# empty\n")
        p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                           env=env)
        out = p.stdout.decode()
        return p.returncode, [json.loads(l) for l in out.splitlines() if l.startswith("{")], \
            p.stderr.decode()


def queued_rcpts(r):
    return sorted(row["address"] for row in r.queue.query("SELECT address FROM recipient"))


def test_odmr_port_replies(denv, tmp_path):
    o = Odmr(denv, tmp_path)
    c = Customer(o.odmr_port)
    assert c.greeting.code == 220
    r = c.ehlo()
    # RFC 2645 §4.1: AUTH and ATRN are offered; no mail service
    assert "ATRN" in c.keywords and "AUTH" in c.keywords, r
    assert "CRAM-MD5" in c.keywords["AUTH"].split()
    assert "PIPELINING" not in c.keywords and "ETRN" not in c.keywords
    for cmd in ("MAIL FROM:<a@b.test>", "RCPT TO:<u@example.org>", "DATA", "VRFY u",
                "ETRN example.org"):
        r = c.cmd(cmd)
        assert (r.code, r.text) == (502, "5.5.1 Error: command not available on this ODMR service"), (cmd, r)
    r = c.cmd("ATRN example.org")
    assert (r.code, r.text) == (530, "5.7.0 Authentication required")
    r = c.auth_cram_md5(USER, PASSWORD)
    assert r.code == 235, r
    r = c.cmd("ATRN example.org,other.test")  # one domain not owned refuses it all
    assert (r.code, r.text) == (450, "4.7.1 Access denied to you for <other.test>")
    r = c.cmd("ATRN nope..example")
    assert r.code == 501, r
    r = c.cmd("ATRN example.org")  # nothing queued
    assert (r.code, r.text) == (453, "4.0.0 You have no mail")
    r = c.cmd("ATRN")  # every domain of the account
    assert (r.code, r.text) == (453, "4.0.0 You have no mail")
    assert c.cmd("NOOP").code == 250 and c.cmd("RSET").code == 250
    assert c.cmd("QUIT").code == 221
    c.close()
    o.r.wait_log(TURN_LOG % (USER, "example.org,other.test", 450))
    o.r.wait_log(TURN_LOG % ("", "example.org", 530))
    o.r.wait_log(r"disconnect from .* atrn=5")

    # the SMTP port knows no ATRN
    s = o.r.raw()
    s.cmd("EHLO client.test")
    r = s.cmd("ATRN example.org")
    assert (r.code, r.text) == (502, "5.5.1 Error: command not available on this port"), r


def test_turn_delivers_exactly_the_requested_domains_byte_exact(denv, tmp_path):
    o = Odmr(denv, tmp_path)
    dotted = ["first", ".leading dot", "..two", ".", "last"]
    sent = {}
    with Client(o.r) as c:
        for uid, rcpts, lines in [
            ("a1", ["u1@example.org"], None),
            ("a2", ["u2@example.org", "u3@example.org"], dotted),
            ("mixed", ["u4@example.org", "w1@other.test", "x1@b.example"], None),
            ("b1", ["x2@b.example"], None),
            ("o1", ["w2@other.test"], None),
        ]:
            data = message(uid, lines=lines)
            sent[uid] = (c.send("sender@sender.test", rcpts, data), rcpts)
    bodies = o.r.queue.all_bodies()

    off = o.r.log_size()
    rc, out, err = o.atrn("example.org")
    assert rc == 0, err
    # every outcome is committed before the turn is logged as ended
    o.r.wait_log(ENDED_LOG % 4 + r"deferred=0 bounced=0", since=off)
    assert out[0]["result"] == "delivered" and out[0]["code"] == 250
    assert out[0]["messages"] == 3, out
    got = {subject_of(t.data): t for t in o.site.transactions}
    assert sorted(got) == ["a1", "a2", "mixed"]
    for uid, t in got.items():
        qid, rcpts = sent[uid]
        assert t.data == bodies[qid], uid  # the stored message, byte for byte
        assert t.rcpt_addrs == [a for a in rcpts if a.endswith("@example.org")]
    # the JSON summary pairs the relay's queue ids with the site's replies
    assert sorted(x["relay_id"] for x in out[0]["transactions"]) == \
        sorted(sent[u][0] for u in ("a1", "a2", "mixed"))
    assert all(x["stored"] and x["local_reply"].startswith("250 ") for x in out[0]["transactions"])
    assert queued_rcpts(o.r) == ["w1@other.test", "w2@other.test", "x1@b.example", "x2@b.example"]
    o.r.wait_log(r"%s: to=<u1@example.org>, relay=odmr:acme\[127\.0\.0\.1\]:\d+, delay=[\d.]+, delays=[\d./]+, "
                 r"dsn=2\.0\.0, status=sent \(250 " % sent["a1"][0])
    assert o.pushed.count() == 0

    # no argument: every domain of the account (b.example), nothing twice
    off = o.r.log_size()
    rc, out, err = o.atrn()
    assert rc == 0, err
    o.r.wait_log(ENDED_LOG % 2, since=off)
    assert out[0]["messages"] == 2
    assert sorted(subject_of(t.data) for t in o.site.transactions) == ["a1", "a2", "b1", "mixed", "mixed"]
    assert queued_rcpts(o.r) == ["w1@other.test", "w2@other.test"]
    rc, out, err = o.atrn()
    assert rc == 0 and out[0]["result"] == "nothing waiting" and out[0]["code"] == 453, (rc, out, err)


def test_customer_drop_after_two_of_five(denv, tmp_path):
    o = Odmr(denv, tmp_path)
    qids = []
    with Client(o.r) as c:
        for i in range(5):
            qids.append(c.send("s@sender.test", ["u%d@example.org" % i], message("m%d" % i)))
    cu = o.customer()
    r = cu.cmd("ATRN example.org")
    assert r.lines == ["250 OK now reversing the connection"], r
    got = cu.serve(stop_after=2, stop_how="drop")
    assert [subject_of(d) for _, _, d in got] == ["m0", "m1"]
    o.r.wait_log(r"ATRN turn with .* ended: account=<acme> delivered=2 deferred=1 bounced=0")
    # the two acknowledged are gone, the rest stays for the next turn
    assert queued_rcpts(o.r) == ["u2@example.org", "u3@example.org", "u4@example.org"]
    o.r.wait_log(r"%s: to=<u2@example.org>, relay=odmr:acme.*status=deferred \(421 4\.4\.2 " % qids[2])
    # a dropped turn backs nothing off: the next ATRN gets them at once
    off = o.r.log_size()
    rc, out, err = o.atrn("example.org")
    assert rc == 0, err
    o.r.wait_log(ENDED_LOG % 3, since=off)
    assert sorted(subject_of(t.data) for t in o.site.transactions) == ["m2", "m3", "m4"]
    assert queued_rcpts(o.r) == []


def test_atrn_while_etrn_flushes_gets_451(denv, tmp_path):
    slow = denv.sink("slow")
    slow.behaviour.delay = 0.5  # each message takes a while: the flush stays running
    o = Odmr(denv, tmp_path, domains={"example.org": {"route": "127.0.0.1:%d" % slow.port}})
    with Client(o.r) as c:
        for i in range(6):
            c.send("s@sender.test", ["u%d@example.org" % i], message("m%d" % i))
    assert etrn(o.r, "example.org")[0] == 253
    slow.wait_for(1, 10)
    cu = o.customer()
    r = cu.cmd("ATRN example.org")
    assert (r.code, r.text) == (451, "4.3.0 Unable to process ATRN request now: mail for "
                                     "example.org is being delivered"), r
    cu.close()
    slow.wait_for(6, 30)
    o.r.wait_log(r"ATRN from .* arg=<example\.org> result=451 count=\d+ reason=domain busy")


def test_etrn_during_turn_joins_it(denv, tmp_path):
    # example.org has a push route here, so ETRN is allowed: while the turn
    # holds the domain, the ETRN joins and nothing is pushed meanwhile
    o = Odmr(denv, tmp_path, domains={"example.org": {"route": "127.0.0.1:%d" % free_port()}})
    with Client(o.r) as c:
        for i in range(3):
            c.send("s@sender.test", ["u%d@example.org" % i], message("m%d" % i))
    cu = o.customer()
    assert cu.cmd("ATRN example.org").code == 250
    # the turn waits for our greeting: the domain is running now
    off = o.r.log_size()
    assert etrn(o.r, "example.org")[0] == 253
    o.r.wait_log(r"ETRN from .* arg=<example\.org> result=253", since=off)
    got = cu.serve()
    assert sorted(subject_of(d) for _, _, d in got) == ["m0", "m1", "m2"]
    o.r.wait_log(r"ATRN turn with .* ended: account=<acme> delivered=3")
    assert "site unreachable" not in o.r.log_text()
    assert queued_rcpts(o.r) == []


def test_tls_carries_across_the_turn(denv, tmp_path, tls_cert):
    cert, key = tls_cert
    o = Odmr(denv, tmp_path, tls_cert=cert, tls_key=key, odmr_require_tls="yes")
    with Client(o.r) as c:
        c.send("s@sender.test", ["u@example.org"], message("secret"))
    cu = Customer(o.odmr_port)
    cu.ehlo()
    assert "STARTTLS" in cu.keywords and "AUTH" not in cu.keywords  # not before TLS
    r = cu.auth_cram_md5(USER, PASSWORD)
    assert (r.code, r.text) == (530, "5.7.0 Must issue a STARTTLS command first"), r
    cu.starttls(cafile=cert)
    cu.ehlo()
    assert "AUTH" in cu.keywords and "STARTTLS" not in cu.keywords
    assert cu.auth_cram_md5(USER, PASSWORD).code == 235
    assert cu.cmd("ATRN").code == 250
    # the relay's client speaks to us on the same TLS session: plaintext
    # would not even get through the SSL socket
    got = cu.serve()
    assert [subject_of(d) for _, _, d in got] == ["secret"]
    o.r.wait_log(r"to=<u@example\.org>, relay=odmr:acme.*status=sent")

    # etrnctl atrn --starttls does the same end to end
    with Client(o.r) as c:
        c.send("s@sender.test", ["u@example.org"], message("secret2"))
    rc, out, err = o.atrn(extra=["--starttls"])
    assert rc == 0 and out[0]["messages"] == 1, (rc, out, err)
    assert [subject_of(t.data) for t in o.site.transactions] == ["secret2"]


def test_etrnctl_atrn_starttls_verify(denv, tmp_path, tls_ca):
    # --starttls=verify with the CA that signed relayd's certificate (valid
    # for IP:127.0.0.1, as etrnctl reaches it): the turn runs over TLS; with
    # a CA that did not sign it: TLS failed, exit 76, nothing delivered
    o = Odmr(denv, tmp_path, tls_cert=tls_ca["cert"], tls_key=tls_ca["key"], odmr_require_tls="yes")
    with Client(o.r) as c:
        c.send("s@sender.test", ["u@example.org"], message("verified"))
    rc, out, err = o.atrn(extra=["--starttls=verify", "--tls-ca", tls_ca["other_ca"]])
    assert rc == 76 and out[0]["status"] == 76 and out[0]["result"] == "TLS failed", (rc, out, err)
    assert "certificate verify failed" in out[0]["reply"], out
    assert o.site.transactions == [] and queued_rcpts(o.r) == ["u@example.org"]
    rc, out, err = o.atrn(extra=["--starttls=verify", "--tls-ca", tls_ca["ca"]])
    assert rc == 0 and out[0]["messages"] == 1, (rc, out, err)
    assert [subject_of(t.data) for t in o.site.transactions] == ["verified"]
    o.r.wait_log(r"to=<u@example\.org>, relay=odmr:acme.*status=sent")
    wait_until(lambda: queued_rcpts(o.r) == [], 20, what="the delivered recipient to leave the queue")


def test_route_odmr_never_connects_and_refuses_etrn(denv, tmp_path):
    o = Odmr(denv, tmp_path, domains={"example.org": {"route": "odmr", "probe_interval": "1s"},
                                      "other.test": {"route": "127.0.0.1:%d" % denv.sink("p").port,
                                                     "mode": "retry"}})
    with Client(o.r) as c:
        c.send("s@sender.test", ["u@example.org"], message("pulled"))
    code, text = etrn(o.r, "example.org")
    assert (code, text) == (459, "4.7.1 Node <example.org> not allowed: its mail is collected "
                                 "with ATRN (RFC 2645), use ATRN")
    # an operator flush and two probe intervals: still no attempt of any kind
    subprocess.run([etrnctl_binary(), "-S", o.r.keys["control_socket"], "flush", "example.org"],
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
    time.sleep(2.5)
    # positive marker: the scheduler did run meanwhile (a retry domain delivered)
    with Client(o.r) as c:
        c.send("s@sender.test", ["w@other.test"], message("pushed"))
    o.r.wait_log(r"to=<w@other\.test>, relay=.*status=sent")
    log = o.r.log_text()
    # its arrival is logged as waiting for ATRN, and nothing else
    assert re.search(r"to=<u@example\.org>, relay=none, delay=0, delays=0/0/0/0, dsn=4\.0\.0, "
                     r"status=deferred \(waiting for ATRN\)", log), log
    assert not re.search(r"example\.org: (site unreachable|delivery deferred)|"
                         r"to=<u@example\.org>(?!, relay=none, delay=0, delays=0/0/0/0, dsn=4\.0\.0, "
                         r"status=deferred \(waiting for ATRN\))", log), log
    assert queued_rcpts(o.r) == ["u@example.org"]
    p = subprocess.run([etrnctl_binary(), "-S", o.r.keys["control_socket"], "--json", "domains"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
    rows = {d["domain"]: d for d in map(json.loads, p.stdout.decode().splitlines())}
    assert rows["example.org"]["mode"] == "pulled" and rows["example.org"]["route"] == "odmr"


def test_etrnctl_atrn_exit_statuses(denv, tmp_path):
    o = Odmr(denv, tmp_path)
    # the local MTA is down: 75 before the relay is touched
    off = o.r.log_size()
    rc, out, err = o.atrn("example.org", deliver_to="127.0.0.1:%d" % free_port())
    assert rc == EX_TEMPFAIL and "not asking the relay" in err, (rc, err)
    # a wrong password: 77
    with open(o.pwfile, "w") as f:
        f.write("wrong\n")
    rc, out, err = o.atrn("example.org")
    assert rc == EX_NOPERM and out[0]["result"] == "AUTH refused", (rc, out, err)
    with open(o.pwfile, "w") as f:
        f.write(PASSWORD)  # no line end at all is fine too
    rc, out, err = o.atrn("other.test")  # not the account's: 450
    assert rc == EX_NOPERM and out[0]["code"] == 450, (rc, out, err)
    rc, out, err = o.atrn("example.org")  # nothing waiting: 453 is success
    assert rc == 0 and out[0]["code"] == 453, (rc, out, err)
    log = o.r.log_text()[off:]
    assert log.count("ODMR connect from") == 3, log


def test_etrnctl_atrn_killed_mid_transfer_loses_nothing(denv, tmp_path):
    o = Odmr(denv, tmp_path)
    o.site.behaviour.delay = 0.3
    qids = {}
    with Client(o.r) as c:
        for i in range(8):
            qids["m%d" % i] = c.send("s@sender.test", ["u%d@example.org" % i], message("m%d" % i))
    args = [etrnctl_binary(), "atrn", "-H", "127.0.0.1:%d" % o.odmr_port, "--user", USER,
            "--password-file", o.pwfile, "--deliver-to", o.site.address, "example.org"]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=dict(os.environ, ETRNCTL_DEFAULTS="/dev/null"))
    o.site.wait_for(3, 20)
    p.send_signal(signal.SIGKILL)
    p.wait(10)
    o.r.wait_log(r"ATRN turn with .* ended")
    at_site = {subject_of(t.data) for t in o.site.transactions}
    queued = {row["queue_id"] for row in o.r.queue.query("SELECT queue_id FROM message")}
    for uid, qid in qids.items():
        # everything the relay let go of is at the site; the rest is queued
        assert uid in at_site or qid in queued, uid
    assert queued, "the kill came too late to test anything"
    off = o.r.log_size()
    rc, out, err = o.atrn("example.org")
    assert rc == 0, err
    o.r.wait_log(ENDED_LOG % len(queued), since=off)
    assert {subject_of(t.data) for t in o.site.transactions} == set(qids)
    assert queued_rcpts(o.r) == []


def test_fetchmail_odmr_pulls_with_cram_md5(denv, tmp_path):
    o = Odmr(denv, tmp_path)
    with Client(o.r) as c:
        for i in range(3):
            c.send("s@sender.test", ["u%d@example.org" % i], message("f%d" % i))
        c.send("s@sender.test", ["w@other.test"], message("not-mine"))
    rc_file = tmp_path / "fetchmailrc"
    rc_file.write_text(
        'poll 127.0.0.1 port %d protocol ODMR auth cram-md5 user "%s" password "%s"\n'
        '  fetchdomains example.org smtphost 127.0.0.1/%d\n'
        % (o.odmr_port, USER, PASSWORD, o.site.port))
    os.chmod(rc_file, 0o600)
    home = tmp_path / "fmhome"
    home.mkdir()
    p = subprocess.run(["fetchmail", "-f", str(rc_file), "--nosyslog", "--nodetach", "-v"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60,
                       env=dict(os.environ, HOME=str(home), FETCHMAILHOME=str(home)))
    out = p.stdout.decode(errors="replace")
    assert p.returncode in (0, 1), out  # 1: fetchmail's "no mail" after its pump
    assert sorted(subject_of(t.data) for t in o.site.transactions) == ["f0", "f1", "f2"], out
    o.r.wait_log(r"ATRN turn with .* ended: account=<acme> delivered=3")
    assert queued_rcpts(o.r) == ["w@other.test"]


def test_pull_runs_atrn_from_the_defaults_file(denv, tmp_path):
    # what etrnctl@.service runs: the account settings come from the file
    o = Odmr(denv, tmp_path)
    with Client(o.r) as c:
        c.send("s@sender.test", ["u@example.org"], message("via-pull"))
    defaults = tmp_path / "etrnctl.default"
    defaults.write_text('ETRN_MODE=atrn\nETRN_RELAYS="127.0.0.1:%d"\nETRN_USER=%s\n'
                        'ETRN_PASSWORD_FILE="%s"\nATRN_DELIVER_TO=%s\n'
                        % (o.odmr_port, USER, o.pwfile, o.site.address))
    off = o.r.log_size()
    p = subprocess.run([etrnctl_binary(), "pull", "--retry", "1", "example.org"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60,
                       env=dict(os.environ, ETRNCTL_DEFAULTS=str(defaults)))
    assert p.returncode == 0, p
    assert re.fullmatch(rb"127\.0\.0\.1:%d: 1 message \(\d+ bytes\) delivered to %s\n"
                        % (o.odmr_port, o.site.address.encode()), p.stdout), p.stdout
    o.r.wait_log(ENDED_LOG % 1, since=off)
    assert [subject_of(t.data) for t in o.site.transactions] == ["via-pull"]
    defaults.write_text("ETRN_MODE=smoke-signals\n")
    p = subprocess.run([etrnctl_binary(), "pull", "example.org"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60,
                       env=dict(os.environ, ETRNCTL_DEFAULTS=str(defaults)))
    assert p.returncode == 78 and b"expected etrn or atrn" in p.stderr, p


def test_sigterm_during_a_turn_ends_it_cleanly(denv, tmp_path):
    # SIGTERM: the message being sent ends, then QUIT; the rest stays queued
    # and relayd exits 0 (the turn does not hold the shutdown)
    o = Odmr(denv, tmp_path)
    with Client(o.r) as c:
        for i in range(6):
            c.send("s@sender.test", ["u%d@example.org" % i], message("m%d" % i))
    cu = o.customer()
    assert cu.cmd("ATRN example.org").code == 250

    def first(n):
        if n == 1:
            o.r.signal(signal.SIGTERM)
            o.r.wait_log(r"relayd stopping \(SIGTERM\)")

    got = cu.serve(on_message=first)  # returns at the relay's QUIT
    assert 1 <= len(got) < 6, got
    assert o.r.wait_exit(30) == 0, o.r.log_tail()
    o.r.wait_log(r"ATRN turn with .* ended: account=<acme> delivered=%d" % len(got))
    assert len(queued_rcpts(o.r)) == 6 - len(got)


def test_odmr_port_offers_auth_when_smtpd_auth_is_off(denv, tmp_path):
    # smtpd_auth = no keeps AUTH off the SMTP port only; ODMR is AUTH + ATRN
    o = Odmr(denv, tmp_path, smtpd_auth="no")
    s = o.r.raw()
    r = s.cmd("EHLO client.test")
    assert not any(l[4:].startswith("AUTH") for l in r.lines), r
    cu = o.customer()  # asserts the 235
    assert (cu.cmd("ATRN").code, cu.cmd("QUIT").code) == (453, 221)
    o.r.wait_log(r"disconnect from .* auth=1 .*atrn=1")


@pytest.mark.time_limit(90)
def test_etrnctl_atrn_into_postfix(denv, tmp_path):
    # a real MTA as the site: what Postfix stores is relayd's message byte
    # for byte (below Postfix's own trace fields), and relayd logs Postfix's
    # "queued as" as the outcome, passed through by etrnctl
    pf = denv.postfix("pf.test", users=["user"])
    o = Odmr(denv, tmp_path, domains={"pf.test": {"route": "odmr"}})
    with open(o.creds, "w") as f:
        f.write("%s:{plain}%s:pf.test\n" % (USER, PASSWORD))
    o.r.reload()
    o.r.wait_log(r"configuration reloaded")
    data = message("to-postfix", to="user@pf.test", lines=[".leading dot", "end"]).replace(
        b"\r\n\r\n", b"\r\nDate: Sun, 22 Nov 2026 05:00:00 +0000\r\n\r\n", 1)
    with Client(o.r) as c:
        qid = c.send("s@sender.test", ["user@pf.test"], data)
    stored = o.r.queue.message(qid)["body"]
    off = o.r.log_size()
    rc, out, err = o.atrn("pf.test", deliver_to="127.0.0.1:%d" % pf.port)
    assert rc == 0 and out[0]["messages"] == 1, (rc, out, err)
    assert out[0]["transactions"][0]["relay_id"] == qid
    (box,) = pf.wait_mail("user", 1, 30)
    assert box.endswith(stored.replace(b"\r\n", b"\n")), box
    o.r.wait_log(r"%s: to=<user@pf\.test>, relay=odmr:acme\[127\.0\.0\.1\]:\d+, delay=[\d.]+, delays=[\d./]+, "
                 r"dsn=2\.0\.0, status=sent \(250 2\.0\.0 Ok: queued as [0-9A-F]+\)" % qid,
                 since=off)
    o.r.wait_log(ENDED_LOG % 1, since=off)
    assert queued_rcpts(o.r) == []


def test_etrnctl_atrn_into_exim(denv, tmp_path):
    # Exim 4.96 (Debian's, private to this test) as the site: each message
    # Exim stores is relayd's byte for byte below Exim's own Received: line,
    # a multi-recipient message reaches both users, and relayd logs Exim's
    # "OK id=" reply, passed through by etrnctl, as the outcome
    ex = denv.exim("ex.test", users=["user", "other"])
    assert "Exim version 4.96" in ex.version()
    o = Odmr(denv, tmp_path, domains={"ex.test": {"route": "odmr"}})
    with open(o.creds, "w") as f:
        f.write("%s:{plain}%s:ex.test\n" % (USER, PASSWORD))
    o.r.reload()
    o.r.wait_log(r"configuration reloaded")
    date = b"\r\nDate: Sun, 22 Nov 2026 05:00:00 +0000\r\n\r\n"
    first = message("to-exim", to="user@ex.test", lines=[".leading dot", "..two", "end"]).replace(
        b"\r\n\r\n", date, 1)
    second = message("both", to="user@ex.test, other@ex.test", lines=["x" * 900]).replace(
        b"\r\n\r\n", date, 1)
    with Client(o.r) as c:
        q1 = c.send("s@sender.test", ["user@ex.test"], first)
        q2 = c.send("s@sender.test", ["user@ex.test", "other@ex.test"], second)
    stored = {q: o.r.queue.message(q)["body"].replace(b"\r\n", b"\n") for q in (q1, q2)}
    off = o.r.log_size()
    rc, out, err = o.atrn("ex.test", deliver_to="127.0.0.1:%d" % ex.port)
    assert rc == 0 and out[0]["messages"] == 2, (rc, out, err)
    assert sorted(t["relay_id"] for t in out[0]["transactions"]) == sorted([q1, q2])
    box = ex.wait_mail("user", 2, 30)
    (other,) = ex.wait_mail("other", 1, 30)

    def below_exims_received(m):
        # Exim's one trace field (RFC 5322 §3.6.7; folded over several lines), then relayd's bytes
        lines = m.split(b"\n")
        assert lines[0].startswith(b"Received: from ") and b"by mx.ex.test with esmtp" in m, m
        n = 1
        while lines[n][:1] in (b" ", b"\t"):
            n += 1
        return b"\n".join(lines[n:])

    assert sorted(below_exims_received(m) for m in box) == sorted(stored.values())
    assert below_exims_received(other) == stored[q2]
    for q, rcpt in ((q1, "user"), (q2, "user"), (q2, "other")):
        o.r.wait_log(r"%s: to=<%s@ex\.test>, relay=odmr:acme\[127\.0\.0\.1\]:\d+, delay=[\d.]+, delays=[\d./]+, "
                     r"dsn=2\.0\.0, status=sent \(250 OK id=[0-9A-Za-z-]+\)" % (q, rcpt), since=off)
    o.r.wait_log(ENDED_LOG % 3, since=off)  # recipients
    assert queued_rcpts(o.r) == []


def test_check_warns_when_odmr_cannot_work(tmp_path):
    from relayd_fixture import run_relayd

    base = "hostname = relay.test\ndatabase = %s/q.db\ncontrol_socket =\n" % tmp_path
    conf = tmp_path / "relayd.conf"
    conf.write_text(base + "odmr_listen = 127.0.0.1:1366\n[domain example.org]\nroute = odmr\n")
    p = run_relayd(["-t", "-f", str(conf)])
    err = p.stderr.decode()
    assert p.returncode == 0, err
    assert "warning: odmr_listen is set but credentials is not: every ATRN gets 530" in err, err
    assert "[domain example.org] has route = odmr but no account owns it" in err, err
    creds = tmp_path / "credentials"
    creds.write_text("acme:{plain}x:example.org\n")
    os.chmod(creds, 0o600)
    conf.write_text(base + "credentials = %s\n[domain example.org]\nroute = odmr\n" % creds)
    p = run_relayd(["-t", "-f", str(conf)])
    err = p.stderr.decode()
    assert "[domain example.org] has route = odmr but odmr_listen is not set" in err, err
    conf.write_text(base + "credentials = %s\nodmr_listen = 127.0.0.1:1366\n"
                           "[domain example.org]\nroute = odmr\n" % creds)
    p = run_relayd(["-t", "-f", str(conf)])
    err = p.stderr.decode()
    assert p.returncode == 0 and "ATRN" not in err and "route = odmr" not in err, err


def test_turn_outcomes_as_the_site_answered(denv, tmp_path):
    # the local MTA's 2xx/4xx/5xx reach relayd unchanged through etrnctl:
    # 250 removes, 451 keeps (next attempt unchanged), 554 bounces
    o = Odmr(denv, tmp_path)
    answers = {"good": (250, "2.0.0 stored"), "later": (451, "4.3.0 try later"),
               "bad": (554, "5.7.1 not wanted")}
    o.site.behaviour.data = lambda t: answers[subject_of(t.data)]
    qids = {}
    with Client(o.r) as c:
        for uid in ("good", "later", "bad"):
            qids[uid] = c.send("s@sender.test", ["u-%s@example.org" % uid], message(uid))
    before = {r["address"]: r["next_attempt"] for r in
              o.r.queue.query("SELECT address, next_attempt FROM recipient")}
    off = o.r.log_size()
    args = [etrnctl_binary(), "atrn", "-H", "127.0.0.1:%d" % o.odmr_port, "--user", USER,
            "--password-file", o.pwfile, "--deliver-to", o.site.address, "example.org"]
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60,
                       env=dict(os.environ, ETRNCTL_DEFAULTS="/dev/null"))
    assert p.returncode == 0, p
    assert re.fullmatch(rb"127\.0\.0\.1:\d+: 1 message \(\d+ bytes\) delivered to [0-9.:]+, "
                        rb"2 not taken by it\n", p.stdout), p.stdout
    o.r.wait_log(ENDED_LOG % 1 + r"deferred=1 bounced=1", since=off)
    o.r.wait_log(r"%s: to=<u-later@example\.org>, relay=odmr:acme.*status=deferred "
                 r"\(451 4\.3\.0 try later\)" % qids["later"], since=off)
    o.r.wait_log(r"%s: to=<u-bad@example\.org>, relay=odmr:acme.*status=bounced "
                 r"\(554 5\.7\.1 not wanted\)" % qids["bad"], since=off)
    rows = {r["address"]: r for r in
            o.r.queue.query("SELECT address, next_attempt, last_reply FROM recipient "
                            "WHERE domain = 'example.org'")}
    assert list(rows) == ["u-later@example.org"], rows
    assert rows["u-later@example.org"]["next_attempt"] == before["u-later@example.org"]
    assert rows["u-later@example.org"]["last_reply"] == "451 4.3.0 try later"
