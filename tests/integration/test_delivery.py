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
import threading
import time

import pytest

from relayd_fixture import split_received, wait_until
from sink import Client, etrn, etrn_until_drained, message, subject_of


def log_time(stamp):
    """Seconds since the epoch of a log line's ISO 8601 UTC time stamp."""
    import datetime

    return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


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
    off = r.log_size()
    site.start()
    with Client(r) as c:
        for i in range(1, 21):
            c.send("s@sender.test", ["u%d@retry.test" % i], message("m%02d" % i))
    # backoff 1 s, then 2 s (max). Each run is one connection for the site as a
    # whole (not one per message) and logs one "delivery deferred"; a retry per
    # message would make 20+ connections per run.
    refused = r"retry\.test: delivery deferred \(.*421 4\.3\.2 not now.*\); next try in (\d)s"
    runs = wait_until(lambda: (lambda m: m if len(m) >= 2 else None)(r.log_lines(refused, since=off)), 20,
                      what="two runs refused at the greeting")
    conns = site.conns
    assert [m.group(1) for m in runs[:2]] in (["1", "2"], ["2", "2"]), [m.group(0) for m in runs]
    # the next run may have connected since the second line was read, no more
    assert len(runs) <= conns <= len(runs) + 1, "%d connections for %d runs" % (conns, len(runs))
    assert site.count() == 0
    assert r.queue.count() == 21

    # the site takes mail again: everything arrives without anybody asking
    site.behaviour.refuse = None
    got = site.wait_for(21, 20, "retry domain after the site came up")
    assert sorted(subject_of(t.data) for t in got) == ["m%02d" % i for i in range(21)]
    wait_until(lambda: r.queue.count() == 0, 10, what="the queue to empty")
    # each message went once: one status=sent line per message, and as many
    # transactions as lines (a second copy would be a transaction more)
    sent = r.log_lines(r"^\S+ relayd/\w+\[\d+\]: (\w+): to=<u\d+@retry\.test>, .*status=sent ", since=off)
    assert len(sent) == 21 and len({m.group(1) for m in sent}) == 21, [m.group(0) for m in sent]
    assert site.count() == 21


@pytest.mark.parametrize("where", ["rcpt", "dot"])
def test_site_answers_4xx(denv, where):
    site = denv.sink("site")
    if where == "rcpt":
        site.behaviour.rcpt = lambda a: (451, "4.3.0 mailbox busy, try later")
    else:
        site.behaviour.data = [(452, "4.3.1 insufficient system storage")]
    # an ETRN clears a backed-off site's backoff once per min_backoff (issue
    # 9): a short one lets the ETRNs below each make an attempt
    r = denv.relayd(domains={"example.org": {"mode": "hold", "route": route(site)}}, min_backoff="100ms",
                    etrn_rate="1000/1m")
    with Client(r) as c:
        qid = c.send("s@sender.test", ["a@example.org", "b@example.org"], message("tempfail"))
    reply = "451 4.3.0 mailbox busy, try later" if where == "rcpt" else "452 4.3.1 insufficient system storage"
    assert etrn(r, "example.org")[0] == 253
    for a in ("a@example.org", "b@example.org"):
        r.wait_log(r"%s: to=<%s>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, delay=[\d.]+, delays=[\d./]+, dsn=4\.3\.\d, "
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
    # (the ETRN is repeated until one comes min_backoff after the last
    # that cleared the backoff)
    def delivered_after_etrn():
        if site.count() > 0:
            return True
        assert etrn(r, "example.org")[0] in (251, 253)
        return site.count() > 0

    wait_until(delivered_after_etrn, 15, interval=0.2, what="an ETRN after min_backoff to deliver")
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
    r.wait_log(r"%s: to=<u@example\.org>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, delay=[\d.]+, delays=[\d./]+, dsn=4\.4\.2, "
               r"status=deferred \(421 4\.4\.2 lost connection with .* while sending end of data" % (qid, site.port),
               timeout=15, since=off)
    # the run is over (nothing more happens until the next ETRN) and its
    # outcome is committed: the recipient carries the reply
    r.wait_log(r"example\.org: delivery deferred \(421 4\.4\.2 ", timeout=15, since=off)
    def deferral_committed():
        m = r.queue.message(qid)
        assert m is not None, "a message lost when the site hung up in DATA"
        return (m["recipients"][0]["last_reply"] or "").startswith("421 4.4.2 lost connection")

    wait_until(deferral_committed, 15, what="the deferral to be committed")
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
    assert etrn(r, "example.org")[0] == 253
    site.wait_event("hang at", 10)
    # given up after the timeout (not never), and the run is over
    r.wait_log(r"example\.org: delivery deferred \(", timeout=60, since=off)
    # ...and not before it: relayd's own clock, from the ETRN to the deferral
    (etrn_line,) = r.log_lines(r"^(\S+) relayd/smtpd\[\d+\]: ETRN from .*arg=<example\.org>", since=off)
    (deferred,) = r.log_lines(r"^(\S+) relayd/qmgr\[\d+\]: example\.org: delivery deferred", since=off)
    waited = log_time(deferred.group(1)) - log_time(etrn_line.group(1))
    assert waited >= 1.9, "gave up after %.3fs with delivery_timeout = 2s" % waited
    assert r.queue.message(qid) is not None
    assert site.count() == 0

    site.behaviour.hang = None
    # (the ETRN is repeated until one comes min_backoff after the last
    # that cleared the backoff)
    def delivered_after_etrn():
        if site.count() > 0:
            return True
        assert etrn(r, "example.org")[0] in (251, 253)
        return site.count() > 0

    wait_until(delivered_after_etrn, 15, interval=0.2, what="an ETRN after min_backoff to deliver")
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
    assert pf.mailbox("user") == []  # held until the site asks
    off = r.log_size()
    assert etrn(r, "pf.test") == (253, "2.0.0 1 pending messages for node <pf.test> started")
    (box,) = pf.wait_mail("user", 1, 30)
    r.wait_log(r"%s: to=<user@pf\.test>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, delay=[\d.]+, delays=[\d./]+, dsn=2\.0\.0, "
               r"status=sent \(250 2\.0\.0 Ok: queued as [0-9A-F]+\)" % (qid, pf.port), timeout=10, since=off)
    # (the 253 with count 1 and the delivery line after the ETRN: held until asked)
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
    off = r.log_size()
    assert etrn(r, "self.test")[0] == 253
    # the run ends on the unreachable preference 5 host alone
    r.wait_log(r"self\.test: delivery deferred \(other\.self\.test\[127\.0\.0\.4\]:\d+: 421 4\.4\.1 connect "
               r"to other\.self\.test\[127\.0\.0\.4\]:\d+ failed: connection refused\)", timeout=15, since=off)
    assert r.queue.message(qid) is not None
    for h in ("127.0.0.5", "127.0.0.6"):
        assert s[h].conns == 0, "fell back to a pruned MX %s" % h


def test_site_table_forgets_idle_sites_never_a_busy_one(denv):
    """site_table_size = 2: a site with a delivery run in progress stays;
    idle sites are forgotten, least recently used first, to make room; no
    mail is lost with them (ETRN finds a forgotten site again)."""
    busy = denv.sink("busy", start=False)
    busy.behaviour.pause_data = threading.Event()
    busy.start()
    held = denv.sink("held")
    doms = {"a.test": {"mode": "retry", "route": route(busy)}}
    for d in "bcd":
        doms["%s.test" % d] = {"mode": "hold", "route": route(held)}
    r = denv.relayd(domains=doms, site_table_size="2", log_level="debug")
    with Client(r) as c:
        c.send("s@sender.test", ["u@a.test"], message("a1"))
    try:
        busy.wait_event("data started", 20)  # a.test's run is in progress
        # each hold domain's mail adds an idle site; from the third on the table is full
        for d in "bcd":
            with Client(r) as c:
                c.send("s@sender.test", ["u@%s.test" % d], message(d + "1"))
        r.wait_log(r"b\.test: site state forgotten \(site_table_size 2\)", timeout=20)
        r.wait_log(r"c\.test: site state forgotten \(site_table_size 2\)", timeout=20)
        assert "a.test: site state forgotten" not in r.log_text()
    finally:
        busy.behaviour.pause_data.set()
    assert [subject_of(t.data) for t in busy.wait_for(1, 30)] == ["a1"]
    # a forgotten site's mail is still there, and ETRN flushes it
    assert etrn(r, "b.test") == (253, "2.0.0 1 pending messages for node <b.test> started")
    assert [subject_of(t.data) for t in held.wait_for(1, 30)] == ["b1"]
    wait_until(lambda: r.queue.count() == 2, 20, what="a1 and b1 delivered")
    assert busy.count() == 1
