# test_delivery: relayd's outbound side against sites that misbehave, all on
# loopback. A retry domain delivers on its own once its site comes up, with
# one probe per backoff interval meanwhile, not one per message; a site that
# answers 4xx keeps the mail queued with the reply and the attempt counted; a
# site that drops the connection in the middle of DATA or never answers
# (delivery_timeout) keeps it queued for the next ETRN; a real Postfix
# instance as the site's MTA receives a flush into a user's mailbox; route =
# mx with dnsmasq: preference order, falling back to the next MX, and MX
# self-pruning (the relay's own name or address in the MX list).

import re
import time

import pytest

from relayd_fixture import split_received, wait_until
from sink import Client, etrn, etrn_until_drained, message, subject_of


def route(sink):
    return "127.0.0.1:%d" % sink.port


def rcpt_rows(r, domain=None):
    sql = "SELECT m.queue_id AS q, r.* FROM recipient r JOIN message m ON m.id = r.message_id"
    if domain:
        return r.queue.query(sql + " WHERE r.domain = ? ORDER BY r.id", (domain,))
    return r.queue.query(sql + " ORDER BY r.id")


@pytest.mark.time_limit(60)
def test_retry_domain_delivers_on_its_own_when_the_site_comes_up(denv):
    site = denv.sink("site", start=False)
    r = denv.relayd(domains={"retry.test": {"mode": "retry", "route": route(site)}},
                    min_backoff="1s", max_backoff="2s", connect_timeout="2s")
    with Client(r) as c:
        first = c.send("s@sender.test", ["u0@retry.test"], message("m00"))
    # tried at once (new mail in retry mode); the site is down: deferred, still queued
    r.wait_log(r"site unreachable: .*127\.0\.0\.1.*:%d" % site.port, timeout=10)
    r.wait_log(r"retry\.test: delivery deferred \(.*\); next try in 1s", timeout=10)
    assert r.queue.message(first) is not None

    # the site is up but turns mail away at the greeting: the relay backs off
    # per site, so 20 more messages do not mean 20 more connections per try
    site.behaviour.refuse = (421, "4.3.2 not now")
    site.start()
    with Client(r) as c:
        for i in range(1, 21):
            c.send("s@sender.test", ["u%d@retry.test" % i], message("m%02d" % i))
    t0 = time.monotonic()
    site.wait_event("refused at greeting", 10)
    time.sleep(max(0.0, 4.0 - (time.monotonic() - t0)))
    conns = site.conns
    assert site.count() == 0
    # backoff 1 s, then 2 s (max): about 3 tries in 4 s; a retry per message would be 20+
    assert 1 <= conns <= 6, "%d connections in 4 s to a site that refuses at the greeting" % conns
    r.wait_log(r"retry\.test: delivery deferred \(.*421 4\.3\.2 not now.*\); next try in 2s", timeout=5)
    assert r.queue.count() == 21

    # the site takes mail again: everything arrives without anybody asking
    site.behaviour.refuse = None
    got = site.wait_for(21, 20, "retry domain after the site came up")
    assert sorted(subject_of(t.data) for t in got) == ["m%02d" % i for i in range(21)]
    wait_until(lambda: r.queue.count() == 0, 10, what="the queue to empty")
    assert site.quiet(1.0)


@pytest.mark.parametrize("where", ["rcpt", "dot"])
def test_site_answers_4xx(denv, where):
    site = denv.sink("site")
    if where == "rcpt":
        site.behaviour.rcpt = lambda a: (451, "4.3.0 mailbox busy, try later")
    else:
        site.behaviour.data = [(452, "4.3.1 insufficient system storage")]
    r = denv.relayd(domains={"example.org": {"mode": "hold", "route": route(site)}})
    with Client(r) as c:
        qid = c.send("s@sender.test", ["a@example.org", "b@example.org"], message("tempfail"))
    reply = "451 4.3.0 mailbox busy, try later" if where == "rcpt" else "452 4.3.1 insufficient system storage"
    assert etrn(r, "example.org")[0] == 253
    for a in ("a@example.org", "b@example.org"):
        r.wait_log(r"%s: to=<%s>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, delay=\d+, dsn=4\.3\.\d, "
                   r"status=deferred \(%s\)" % (qid, a, site.port, re.escape(reply)), timeout=15)

    def deferred():
        rows = rcpt_rows(r, "example.org")
        return len(rows) == 2 and all(x["attempts"] == 1 for x in rows) and rows

    rows = wait_until(deferred, 10, what="both recipients deferred with attempts = 1")
    for x in rows:
        assert x["q"] == qid
        assert reply in (x["last_reply"] or ""), x
        assert x["next_attempt"] > time.time() - 5, x
    assert site.count() == 0

    # a second refusal counts a second attempt
    assert etrn(r, "example.org")[0] == 253
    wait_until(lambda: [x["attempts"] for x in rcpt_rows(r, "example.org")] == [2, 2], 15,
               what="attempts = 2 after the second ETRN")

    # the site recovers: the next ETRN delivers it, one transaction, intact
    stored = r.queue.message(qid)["body"]
    site.behaviour.rcpt = None
    site.behaviour.data = None
    assert etrn(r, "example.org")[0] == 253
    (t,) = site.wait_for(1, 15)
    assert t.data == stored and sorted(t.rcpt_addrs) == ["a@example.org", "b@example.org"]
    etrn_until_drained(r, "example.org", 10)
    assert r.queue.count() == 0


def test_site_drops_the_connection_in_the_middle_of_data(denv):
    site = denv.sink("site")
    site.behaviour.drop_in_data = 300
    r = denv.relayd(domains={"example.org": {"mode": "hold", "route": route(site)}})
    lines = ["line %03d of a message long enough to be cut" % i for i in range(60)]
    with Client(r) as c:
        qid = c.send("s@sender.test", ["u@example.org"], message("cut", lines=lines))
    stored = r.queue.message(qid)["body"]
    off = r.log_size()
    assert etrn(r, "example.org")[0] == 253
    site.wait_event("dropped in DATA", 15)
    # the delivery is given up as temporary and the run ends: the message is still queued
    r.wait_log(r"%s: to=<u@example\.org>, .*status=deferred|delivery deferred" % qid, timeout=15, since=off)
    time.sleep(0.5)
    assert r.queue.message(qid) is not None, "a message lost when the site hung up in DATA"
    assert site.count() == 0

    site.behaviour.drop_in_data = None
    assert etrn(r, "example.org")[0] == 253
    (t,) = site.wait_for(1, 15, "the message after the dropped connection")
    assert t.data == stored
    etrn_until_drained(r, "example.org", 10)
    assert r.queue.count() == 0


@pytest.mark.parametrize("hang", ["greeting", "data"])
def test_site_never_answers(denv, hang):
    site = denv.sink("site")
    site.behaviour.hang = hang
    r = denv.relayd(domains={"example.org": {"mode": "hold", "route": route(site)}},
                    delivery_timeout="2s", delivery_data_timeout="2s")
    with Client(r) as c:
        qid = c.send("s@sender.test", ["u@example.org"], message("silent"))
    stored = r.queue.message(qid)["body"]
    off = r.log_size()
    t0 = time.monotonic()
    assert etrn(r, "example.org")[0] == 253
    site.wait_event("hang at", 10)
    # given up after the timeout, not before and not never
    r.wait_log(r"%s: to=<u@example\.org>, .*status=deferred|delivery deferred|site unreachable" % qid,
               timeout=15, since=off)
    waited = time.monotonic() - t0
    assert 1.5 <= waited <= 12, "gave up after %.1fs with delivery_timeout = 2s" % waited
    assert r.queue.message(qid) is not None
    assert site.count() == 0

    site.behaviour.hang = None
    assert etrn(r, "example.org")[0] == 253
    (t,) = site.wait_for(1, 15)
    assert t.data == stored
    etrn_until_drained(r, "example.org", 10)


@pytest.mark.time_limit(90)
def test_postfix_as_the_site(denv):
    pf = denv.postfix("pf.test", users=["user"])
    r = denv.relayd(domains={"pf.test": {"mode": "hold", "route": "127.0.0.1:%d" % pf.port}})
    lines = ["Greetings from relayd to Postfix.", ".a line with a leading dot", "end"]
    # with a Date: of its own, so Postfix's cleanup adds nothing below the trace fields
    data = message("to-postfix", to="user@pf.test", lines=lines).replace(
        b"\r\n\r\n", b"\r\nDate: Sun, 22 Nov 2026 05:00:00 +0000\r\n\r\n", 1)
    with Client(r) as c:
        qid = c.send("s@sender.test", ["user@pf.test"], data)
    stored = r.queue.message(qid)["body"]
    hdr, _ = split_received(stored)
    time.sleep(0.5)
    assert pf.mailbox("user") == []  # held until the site asks
    assert etrn(r, "pf.test") == (253, "2.0.0 1 pending messages for node <pf.test> started")
    (box,) = pf.wait_mail("user", 1, 30)
    r.wait_log(r"%s: to=<user@pf\.test>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, delay=\d+, dsn=2\.0\.0, "
               r"status=sent \(250 2\.0\.0 Ok: queued as [0-9A-F]+\)" % (qid, pf.port), timeout=10)
    # Maildir keeps LF line ends; Postfix adds its own trace fields above ours
    as_lf = stored.replace(b"\r\n", b"\n")
    assert box.endswith(as_lf), box
    assert hdr.replace(b"\r\n", b"\n") in box
    assert b"Return-Path: <s@sender.test>" in box and b"Delivered-To: user@pf.test" in box
    etrn_until_drained(r, "pf.test", 10)
    assert r.queue.count() == 0


# --- route = mx, with dnsmasq --------------------------------------------------------------


def mx_setup(denv, mx, hosts, sink_hosts, domains, **keys):
    """dnsmasq with the records, sinks on sink_hosts at one common port (relayd's
    delivery_port), relayd using that resolver. Returns (relayd, {host: sink})."""
    port = denv.common_port(list(sink_hosts))
    sinks = {h: denv.sink("sink-" + h, host=h, port=port) for h in sink_hosts}
    d = denv.dns(mx=mx, hosts=hosts)
    r = denv.relayd(domains=domains, dns_servers=d.server, delivery_port=str(port), connect_timeout="2s", **keys)
    return r, sinks


def test_mx_preference_order_and_fallback(denv):
    r, s = mx_setup(
        denv,
        # listed worst first: the order must come from the preferences
        mx=[("mx.test", "mx3.mx.test", 30), ("mx.test", "mx2.mx.test", 20), ("mx.test", "mx1.mx.test", 10)],
        hosts={"mx1.mx.test": "127.0.0.2", "mx2.mx.test": "127.0.0.3", "mx3.mx.test": "127.0.0.4"},
        sink_hosts=["127.0.0.2", "127.0.0.3", "127.0.0.4"],
        domains={"mx.test": {"mode": "hold", "route": "mx"}})
    with Client(r) as c:
        c.send("s@sender.test", ["u@mx.test"], message("best"))
    assert etrn(r, "mx.test")[0] == 253
    s["127.0.0.2"].wait_for(1, 15, "the preference 10 MX")
    r.wait_log(r"to=<u@mx\.test>, relay=mx1\.mx\.test\[127\.0\.0\.2\]:%d, .*status=sent" % s["127.0.0.2"].port)
    etrn_until_drained(r, "mx.test", 10)

    # the best MX refuses connections: the next one takes the mail
    s["127.0.0.2"].stop()
    with Client(r) as c:
        c.send("s@sender.test", ["u@mx.test"], message("second"))
    assert etrn(r, "mx.test")[0] == 253
    (t,) = s["127.0.0.3"].wait_for(1, 15, "the preference 20 MX")
    assert subject_of(t.data) == "second"
    r.wait_log(r"to=<u@mx\.test>, relay=mx2\.mx\.test\[127\.0\.0\.3\]:%d, .*status=sent" % s["127.0.0.3"].port)
    etrn_until_drained(r, "mx.test", 10)
    assert s["127.0.0.4"].count() == 0 and s["127.0.0.4"].conns == 0


def test_mx_self_pruning(denv):
    r, s = mx_setup(
        denv,
        mx=[("self.test", "relay.test", 10), ("self.test", "other.self.test", 5), ("self.test", "worse.self.test", 20),
            ("addr.test", "alias.addr.test", 10), ("addr.test", "good.addr.test", 5)],
        hosts={"relay.test": "127.0.0.5", "other.self.test": "127.0.0.4", "worse.self.test": "127.0.0.6",
               "alias.addr.test": "127.0.0.7", "good.addr.test": "127.0.0.8"},
        sink_hosts=["127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.7", "127.0.0.8"],
        domains={"self.test": {"mode": "hold", "route": "mx"}, "addr.test": {"mode": "hold", "route": "mx"}},
        my_addresses="127.0.0.7")
    with Client(r) as c:
        c.send("s@sender.test", ["u@self.test"], message("self"))
        c.send("s@sender.test", ["u@addr.test"], message("addr"))
    # relayd's hostname (relay.test) is an MX at 10: it and everything at 10 or
    # worse is dropped, the preference 5 host gets the mail
    assert etrn(r, "self.test")[0] == 253
    (t,) = s["127.0.0.4"].wait_for(1, 15)
    assert subject_of(t.data) == "self"
    # the same when the relay is known by an address (my_addresses)
    assert etrn(r, "addr.test")[0] == 253
    (t,) = s["127.0.0.8"].wait_for(1, 15)
    assert subject_of(t.data) == "addr"
    etrn_until_drained(r, "self.test", 10)
    etrn_until_drained(r, "addr.test", 10)
    for h in ("127.0.0.5", "127.0.0.6", "127.0.0.7"):
        assert s[h].conns == 0, "connected to pruned MX %s" % h

    # now the preference 5 host is unreachable: the pruned ones are still not tried
    s["127.0.0.4"].stop()
    with Client(r) as c:
        qid = c.send("s@sender.test", ["v@self.test"], message("self-2"))
    assert etrn(r, "self.test")[0] == 253
    r.wait_log(r"site unreachable|delivery deferred", timeout=15)
    time.sleep(0.5)
    assert r.queue.message(qid) is not None
    for h in ("127.0.0.5", "127.0.0.6"):
        assert s[h].conns == 0, "fell back to a pruned MX %s" % h
