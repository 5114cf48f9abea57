# test_etrn: ETRN (RFC 1985) against the real relayd, with recording sinks as
# the sites. A hold domain keeps its mail while the site is down and hands it
# over on ETRN byte for byte (the stored body: relayd's one Received: header
# plus what the client sent), with the true count in the 253; ETRN for one
# domain delivers nothing of another; every reply (251, 253, 459, 501, 503,
# 458 past etrn_rate) and every form (domain, @domain, #queue) as specified;
# repeated ETRN ends in 251 once the flush has drained; etrn_access; Python's
# smtplib and fetchmail's ETRN mode as real clients.

import os
import re
import subprocess
import time

import pytest

from relayd_fixture import split_received, wait_until
from sink import Client, etrn, etrn_until_drained, message, subject_of

ETRN_LOG = r"ETRN from unknown\[127\.0\.0\.1\]:\d+: arg=<%s> result=%d count=%d"
# relayd(8): the one 459 a client gets, whatever the reason
REFUSED = "4.7.1 Node <%s> not allowed: not a relay domain this client may flush"
SENT_LOG = r"%s: to=<%s>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, delay=[\d.]+, delays=[\d./]+, dsn=2\.0\.0, status=sent \(250 "


def route(sink):
    return "127.0.0.1:%d" % sink.port


def test_hold_domain_queues_and_etrn_delivers_byte_for_byte(denv):
    site = denv.sink("site", start=False)  # the site is offline
    other = denv.sink("other")
    marker = denv.sink("marker")
    r = denv.relayd(domains={"example.org": {"mode": "hold", "route": route(site)},
                             "other.test": {"mode": "hold", "route": route(other)},
                             "marker.test": {"mode": "retry", "route": route(marker)}})
    dotted = ["first", ".leading dot", "..two dots", ".", "a . inside", "last"]
    sent = {}  # subject -> (queue id, bytes as submitted, envelope recipients for example.org)
    with Client(r) as c:
        for uid, rcpts, lines in [
            ("one", ["u1@example.org"], None),
            ("two-rcpts", ["u2@example.org", "u3@Example.ORG"], None),
            ("dots", ["u4@example.org"], dotted),
            ("mixed", ["u5@example.org", "w1@other.test"], None),
            ("other-1", ["w2@other.test"], None),
            ("other-2", ["w3@other.test"], None),
        ]:
            data = message(uid, lines=lines)
            qid = c.send("sender@sender.test", rcpts, data)
            sent[uid] = (qid, data, [a for a in rcpts if a.lower().endswith("@example.org")])
    stored = r.queue.all_bodies()
    assert len(stored) == 6

    # hold: nothing is attempted while nobody asks. The marker: a retry
    # domain's message sent after them is delivered on its own, so the
    # scheduler has seen the new mail and passed the hold domains by
    with Client(r) as c:
        c.send("sender@sender.test", ["m@marker.test"], message("marker", to="m@marker.test"))
    marker.wait_for(1, 30, "the retry domain's message")
    wait_until(lambda: r.queue.count() == 6, 30, what="the marker message to leave the queue")
    assert other.count() == 0 and other.conns == 0, "a hold domain was delivered without ETRN"
    # each recipient is logged once as waiting (Postfix's "deferred transport"), nothing else
    log = r.log_text()
    assert not re.search(r"to=<[^>]*@(example\.org|other\.test)>.*status=(?!deferred \(waiting for ETRN\))",
                         log, re.I), log
    waiting = re.findall(r"to=<([^>]+)>, relay=none, delay=0, delays=0/0/0/0, dsn=4\.0\.0, "
                         r"status=deferred \(waiting for ETRN\)", log)
    assert sorted(a for a in waiting if a.endswith("@example.org")) == \
        sorted(a.lower() for _, _, rs in sent.values() for a in rs), waiting

    # ETRN while the site is still down: the true count, and the mail stays
    off = r.log_size()
    assert etrn(r, "example.org") == (253, "2.0.0 4 pending messages for node <example.org> started")
    r.wait_log(ETRN_LOG % ("example\\.org", 253, 4), since=off)
    r.wait_log(r"site unreachable|delivery deferred", timeout=15, since=off)
    assert r.queue.count() == 6

    # the site comes up and asks again
    site.start()
    off = r.log_size()
    assert etrn(r, "example.org") == (253, "2.0.0 4 pending messages for node <example.org> started")
    got = site.wait_for(4, 20, "example.org's mail after ETRN")
    # the flush is over (251) and brought exactly the 4
    etrn_until_drained(r, "example.org", 30)
    assert site.count() == 4, "more than the 4 messages arrived: %r" % site.received()
    by_subject = {subject_of(t.data): t for t in got}
    assert sorted(by_subject) == ["dots", "mixed", "one", "two-rcpts"]
    for uid, t in by_subject.items():
        qid, data, rcpts = sent[uid]
        assert t.data == stored[qid], "%s: delivered bytes differ from the stored body" % uid
        hdr, rest = split_received(t.data)
        assert rest == data, "%s: not the message as submitted" % uid
        assert hdr.startswith(b"Received: from client.test ") and (b" id %s" % qid.encode()) in hdr, hdr
        heads = t.data.split(b"\r\n\r\n", 1)[0]
        assert len(re.findall(rb"(?m)^Received:", heads)) == 1, "exactly one Received: added"
        assert t.mail_from == "sender@sender.test"
        assert [a.lower() for a in t.rcpt_addrs] == [a.lower() for a in rcpts], (uid, t.rcpt_addrs)
        for a in rcpts:
            local, dom = a.rsplit("@", 1)  # the domain is logged normalised
            r.wait_log(SENT_LOG % (qid, re.escape(local + "@" + dom.lower()), site.port), since=off)
    # one transaction per message with all its recipients of the domain
    assert len(by_subject["two-rcpts"].rcpts) == 2

    # nothing of other.test went anywhere; its recipients are all still queued
    assert other.count() == 0 and other.conns == 0
    def left():
        return [(x["q"], x["a"]) for x in r.queue.query(
            "SELECT m.queue_id AS q, r.address AS a FROM recipient r JOIN message m "
            "ON m.id = r.message_id ORDER BY r.address")]

    want = [(sent["mixed"][0], "w1@other.test"), (sent["other-1"][0], "w2@other.test"),
            (sent["other-2"][0], "w3@other.test")]
    wait_until(lambda: left() == want, 10, what="only other.test's recipients left")

    # the queue for example.org has drained: 251
    answers = etrn_until_drained(r, "example.org", 10)
    assert answers[-1] == (251, "2.0.0 OK, no messages waiting for node <example.org>")

    # and other.test on its own ETRN
    assert etrn(r, "other.test")[0] == 253
    assert len(other.wait_for(3, 20)) == 3
    assert site.count() == 4


def test_etrn_replies(denv):
    site = denv.sink("site")
    r = denv.relayd(domains={"example.org": {"mode": "hold", "route": route(site)},
                             "empty.test": {"mode": "hold", "route": route(site)}},
                    extra="[queue grp]\ndomains = example.org, empty.test\n")
    assert etrn(r, "empty.test") == (251, "2.0.0 OK, no messages waiting for node <empty.test>")
    r.wait_log(ETRN_LOG % ("empty\\.test", 251, 0))
    assert etrn(r, "EMPTY.Test.") [0] == 251
    assert etrn(r, "#grp") == (251, "2.0.0 OK, no messages waiting for node <#grp>")
    # one text for every refusal (a stranger cannot tell "not ours" from
    # "not yours"); the log says which
    for arg, why in [("notours.test", "not a relay domain"), ("com", "not a relay domain"),
                     ("@com", "not a relay domain"), ("@test", "not a relay domain"),
                     ("@notours.test", "not a relay domain"), ("#nosuch", "no such queue")]:
        assert etrn(r, arg) == (459, REFUSED % arg), arg
        r.wait_log(r"arg=<%s> result=459 count=0 reason=%s" % (re.escape(arg), why))

    c = r.raw()
    c.expect("ETRN example.org", 503, contains="5.5.1")  # before EHLO
    c.close()
    for bad in ["ETRN", "ETRN ", "ETRN exa mple.org", "ETRN foo..bar", "ETRN @", "ETRN #", "ETRN #a b",
                "ETRN -bad-.test", "ETRN x@y.test"]:
        c = r.raw()  # one connection each: errors add up to a 421
        c.ehlo()
        rep = c.cmd(bad)
        assert rep.line == "501 5.5.4 Syntax: ETRN domain | @domain | #queue", (bad, rep)
        c.close()

    c = r.raw()
    c.ehlo()
    c.expect("MAIL FROM:<a@sender.test>", 250)
    rep = c.cmd("ETRN example.org")
    assert rep.line == "503 5.5.1 Error: MAIL transaction in progress", rep
    c.expect("RCPT TO:<u@example.org>", 250)
    assert c.cmd("ETRN example.org").code == 503
    c.expect("RSET", 250)
    c.expect("ETRN example.org", 251)
    c.expect("QUIT", 221)
    c.close()
    assert site.conns == 0


def test_etrn_at_domain_and_subdomains(denv):
    site = denv.sink("site")
    own = denv.sink("own")
    r = denv.relayd(domains={"parent.test": {"mode": "hold", "subdomains": "yes", "route": route(site)},
                             "own.parent.test": {"mode": "hold", "route": route(own)},
                             "parentx.test": {"mode": "hold", "route": route(site)}})
    with Client(r) as c:
        c.send("s@sender.test", ["u@parent.test"], message("p0"))
        c.send("s@sender.test", ["u@a.parent.test"], message("p1"))
        c.send("s@sender.test", ["u@b.a.parent.test"], message("p2"))
        c.send("s@sender.test", ["u@own.parent.test"], message("p3"))
        c.send("s@sender.test", ["u@parentx.test"], message("px"))  # shares a suffix, not a subdomain

    # the bare name is that node only (RFC 1985 §5)
    assert etrn(r, "parent.test") == (253, "2.0.0 1 pending messages for node <parent.test> started")
    assert [subject_of(t.data) for t in site.wait_for(1, 20)] == ["p0"]
    # once that flush is over (251), nothing else came
    etrn_until_drained(r, "parent.test", 30)
    assert site.count() == 1 and own.count() == 0 and r.queue.count() == 4
    # a subdomain by name
    assert etrn(r, "a.parent.test") == (253, "2.0.0 1 pending messages for node <a.parent.test> started")
    site.wait_for(2, 20)
    etrn_until_drained(r, "a.parent.test", 10)
    # @ takes the domain and everything below it, each to its own destination
    assert etrn(r, "@parent.test") == (253, "2.0.0 2 pending messages for node <@parent.test> started")
    r.wait_log(ETRN_LOG % ("@parent\\.test", 253, 2))
    site.wait_for(3, 20)
    own.wait_for(1, 20)
    etrn_until_drained(r, "@parent.test", 10)
    assert sorted(subject_of(t.data) for t in site.received()) == ["p0", "p1", "p2"]
    assert [subject_of(t.data) for t in own.received()] == ["p3"]
    assert [m["queue_id"] for m in r.queue.messages()] and r.queue.count() == 1  # parentx.test's
    assert etrn(r, "@parentx.test")[0] == 253
    site.wait_for(4, 20)


def test_etrn_queue_form(denv):
    site = denv.sink("site")
    r = denv.relayd(domains={"g1.test": {"mode": "hold", "route": route(site)},
                             "g2.test": {"mode": "hold", "route": route(site)},
                             "g3.test": {"mode": "hold", "route": route(site)}},
                    extra="[queue grp]\ndomains = g1.test, g2.test\n")
    with Client(r) as c:
        c.send("s@sender.test", ["u@g1.test"], message("q1"))
        c.send("s@sender.test", ["u@g2.test"], message("q2"))
        c.send("s@sender.test", ["v@g2.test"], message("q3"))
        c.send("s@sender.test", ["u@g3.test"], message("q4"))
    assert etrn(r, "#grp") == (253, "2.0.0 3 pending messages for node <#grp> started")
    r.wait_log(ETRN_LOG % ("#grp", 253, 3))
    site.wait_for(3, 20)
    etrn_until_drained(r, "#grp", 30)
    assert sorted(subject_of(t.data) for t in site.received()) == ["q1", "q2", "q3"]
    assert r.queue.count() == 1


def flush_with_repeated_etrn(denv, n, delay):
    """n messages to a slow site, ETRN, then ETRN every 0.1 s until 251.
    Returns (relayd, site, answers)."""
    site = denv.sink("site")
    site.behaviour.delay = delay  # a slow site: the flush takes a while
    r = denv.relayd(domains={"example.org": {"mode": "hold", "route": route(site)}}, etrn_rate="10000/1m")
    with Client(r) as c:
        for i in range(n):
            c.send("s@sender.test", ["u%d@example.org" % i], message("r%03d" % i))
    assert etrn(r, "example.org") == (253, "2.0.0 %d pending messages for node <example.org> started" % n)
    answers = etrn_until_drained(r, "example.org", 60, interval=0.1)
    # at the moment of the 251 everything is at the site
    assert site.count() >= n, "251 while %d of %d messages were delivered" % (site.count(), n)
    assert r.queue.count() == 0
    assert answers[-1][1] == "2.0.0 OK, no messages waiting for node <example.org>"
    return r, site, answers


@pytest.mark.time_limit(120)
def test_repeated_etrn_ends_in_251_after_the_flush(denv):
    n = 150
    r, site, answers = flush_with_repeated_etrn(denv, n, 0.01)
    counts = [int(t.split()[1]) for code, t in answers if code == 253]
    assert counts == sorted(counts, reverse=True), "pending counts grew: %r" % counts
    assert {subject_of(t.data) for t in site.received()} == {"r%03d" % i for i in range(n)}
    # joining the running flush did not start a second delivery of anything
    assert site.count() == n
    r.wait_log(ETRN_LOG % ("example\\.org", 251, 0))


@pytest.mark.time_limit(120)
def test_etrn_during_a_flush_counts_what_is_still_pending(denv):
    """RFC 1985 via the spec: a repeated ETRN joins the flush "and answers with
    what is still pending" - the count falls while the site takes the mail."""
    n = 150
    r, site, answers = flush_with_repeated_etrn(denv, n, 0.03)
    counts = [int(t.split()[1]) for code, t in answers if code == 253]
    # the site takes at least 4.5 s (150 x 0.03 s), so ETRNs every 0.1 s see it
    # midway however slow the machine is
    assert any(0 < k < n for k in counts), "the pending count never fell during the flush: %r" % counts


def test_etrn_access(denv):
    site = denv.sink("site")
    r = denv.relayd(domains={"locked.test": {"mode": "hold", "route": route(site), "etrn_access": "192.0.2.0/24"},
                             "open.test": {"mode": "hold", "route": route(site),
                                           "etrn_access": "192.0.2.0/24, 127.0.0.0/8"},
                             "top.test": {"mode": "hold", "subdomains": "yes", "route": route(site)},
                             "in.top.test": {"mode": "hold", "route": route(site), "etrn_access": "192.0.2.7"}})
    with Client(r) as c:
        c.send("s@sender.test", ["u@locked.test"], message("l1"))
        c.send("s@sender.test", ["u@open.test"], message("o1"))
    assert etrn(r, "locked.test") == (459, REFUSED % "locked.test")
    r.wait_log(r"arg=<locked\.test> result=459 count=0 reason=not authorized for this client")
    # @top.test covers in.top.test, which the client may not flush: the rest
    # of it may be, and nothing of it is waiting
    assert etrn(r, "@top.test")[0] == 251
    assert etrn(r, "top.test")[0] == 251
    assert etrn(r, "@in.top.test") == (459, REFUSED % "@in.top.test")
    assert etrn(r, "open.test") == (253, "2.0.0 1 pending messages for node <open.test> started")
    assert [subject_of(t.data) for t in site.wait_for(1, 20)] == ["o1"]
    etrn_until_drained(r, "open.test", 30)
    assert site.count() == 1
    wait_until(lambda: r.queue.count() == 1, 10, what="only locked.test's message left")


def test_etrn_access_is_the_same_on_every_path(denv):
    """etrn_access of in.top.test holds whether the client asks for it by
    name, as part of @top.test or through a queue whose member top.test has
    subdomains = yes: each form flushes (and counts) only the domains the
    client may flush, and refuses with one 459 when that is none."""
    site = denv.sink("site")
    r = denv.relayd(domains={"top.test": {"mode": "hold", "subdomains": "yes", "route": route(site)},
                             "in.top.test": {"mode": "hold", "subdomains": "yes", "route": route(site),
                                             "etrn_access": "192.0.2.7"},
                             "locked.test": {"mode": "hold", "route": route(site), "etrn_access": "192.0.2.0/24"}},
                    extra="[queue grp]\ndomains = top.test\n[queue locked]\ndomains = locked.test, in.top.test\n")
    with Client(r) as c:
        c.send("s@sender.test", ["u@top.test"], message("t1"))
        c.send("s@sender.test", ["u@a.top.test"], message("a1"))
        c.send("s@sender.test", ["u@in.top.test"], message("i1"))
        c.send("s@sender.test", ["u@x.in.top.test"], message("x1"))
        c.send("s@sender.test", ["v@a.top.test", "v@in.top.test"], message("both"))
    assert r.queue.count() == 5

    # #grp: top.test and a.top.test only; three messages (not five)
    assert etrn(r, "#grp") == (253, "2.0.0 3 pending messages for node <#grp> started")
    r.wait_log(ETRN_LOG % ("#grp", 253, 3))
    got = site.wait_for(3, 20)
    assert sorted(subject_of(t.data) for t in got) == ["a1", "both", "t1"]
    # what is left is exactly in.top.test's: i1, x1 and both's second recipient
    wait_until(lambda: sorted(x["domain"] for x in r.queue.query("SELECT domain FROM recipient"))
               == ["in.top.test", "in.top.test", "x.in.top.test"], 20, what="in.top.test's mail left")
    assert r.queue.count() == 3

    # @top.test: in.top.test's mail is waiting, none of it is the client's
    assert etrn(r, "@top.test") == (251, "2.0.0 OK, no messages waiting for node <@top.test>")
    with Client(r) as c:
        c.send("s@sender.test", ["u@b.top.test"], message("b2"))
    assert etrn(r, "@top.test") == (253, "2.0.0 1 pending messages for node <@top.test> started")
    assert [subject_of(t.data) for t in site.wait_for(4, 20)[3:]] == ["b2"]

    # by name, by pattern, by a queue of only others' domains: refused alike
    for arg in ["in.top.test", "x.in.top.test", "@in.top.test", "#locked", "notours.test", "#nosuch"]:
        assert etrn(r, arg) == (459, REFUSED % arg), arg
        r.wait_log(r"arg=<%s> result=459 count=0" % re.escape(arg))
    assert site.count() == 4
    # the sink records b2 before its 250: relayd commits the delivery after
    wait_until(lambda: sorted(x["domain"] for x in r.queue.query("SELECT domain FROM recipient"))
               == ["in.top.test", "in.top.test", "x.in.top.test"], 20, what="only in.top.test's mail left")


def test_etrn_rate_limit(denv):
    r = denv.relayd(domains={"example.org": {"mode": "hold", "route": "127.0.0.1:9"}}, etrn_rate="3/1m")
    c = r.raw()
    c.ehlo()
    for _ in range(3):
        c.expect("ETRN example.org", 251)
    rep = c.cmd("ETRN example.org")
    assert rep.code == 458 and rep.text.startswith("4.7.0 "), rep
    r.wait_log(r"arg=<example\.org> result=458 count=0 reason=rate limit")
    c.close()


def test_etrn_rate_table_forgets_only_the_least_recently_seen_client(denv):
    """etrn_rate_table_size = 2: a third client makes room by forgetting the
    client seen least recently, and only that one; the others stay limited."""
    r = denv.relayd(domains={"example.org": {"mode": "hold", "route": "127.0.0.1:9"}}, etrn_rate="1/1h",
                    etrn_rate_table_size="2")

    def etrn_from(src):
        c = r.raw(source=src)
        c.ehlo()
        code = c.cmd("ETRN example.org").code
        c.close()
        return code

    a, b, c = "127.0.0.1", "127.0.0.2", "127.0.0.3"
    assert etrn_from(a) == 251
    assert etrn_from(b) == 251
    assert etrn_from(b) == 458
    assert etrn_from(a) == 458  # a is now the most recently seen
    assert etrn_from(c) == 251  # the table was full: b went
    assert etrn_from(a) == 458  # a is still counted: not everyone was forgotten
    assert etrn_from(c) == 458
    assert etrn_from(b) == 251  # b was forgotten: a full allowance again (a went now)
    assert etrn_from(c) == 458
    assert etrn_from(a) == 251


def fetchmail_etrn(tmp_path, port, domains):
    """Run fetchmail's ETRN mode once against relayd; (status, output)."""
    home = tmp_path / "fmhome"
    home.mkdir(exist_ok=True)
    rc = home / ".fetchmailrc"
    rc.write_text("")
    os.chmod(str(rc), 0o600)
    env = dict(os.environ, HOME=str(home), FETCHMAILHOME=str(home))
    args = ["fetchmail", "--fetchmailrc", str(rc), "--pidfile", str(home / "fm.pid"), "--nosyslog",
            "-v", "--protocol", "ETRN", "--service", str(port), "--fetchdomains", ",".join(domains),
            "--timeout", "20", "127.0.0.1"]
    p = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       env=env, timeout=60)
    return p.returncode, p.stdout.decode(errors="replace")


def test_fetchmail_as_etrn_client(denv, tmp_path):
    site = denv.sink("site")
    r = denv.relayd(domains={"example.org": {"mode": "hold", "route": route(site)},
                             "example.net": {"mode": "hold", "route": route(site)}})
    with Client(r) as c:
        c.send("s@sender.test", ["u@example.org"], message("f1"))
        c.send("s@sender.test", ["u@example.org", "v@example.org"], message("f2"))
    rc, out = fetchmail_etrn(tmp_path, r.port, ["example.org", "example.net"])
    assert "ETRN example.org" in out, out
    assert "253 2.0.0 2 pending messages for node <example.org> started" in out, out
    assert "251 2.0.0 OK, no messages waiting for node <example.net>" in out, out
    # fetchmail exits 1 ("no mail") in ETRN mode: it never fetches anything itself
    assert rc in (0, 1), (rc, out)
    r.wait_log(ETRN_LOG % ("example\\.org", 253, 2))
    r.wait_log(ETRN_LOG % ("example\\.net", 251, 0))
    got = site.wait_for(2, 20)
    assert sorted(subject_of(t.data) for t in got) == ["f1", "f2"]
    etrn_until_drained(r, "example.org", 10)
