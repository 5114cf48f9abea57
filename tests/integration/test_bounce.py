# test_bounce: what relayd returns to senders, checked where it lands: a
# recording sink playing the sender's MTA, found through dnsmasq by MX like
# any other destination. A 5xx from the site, a null MX (RFC 7505: 556
# 5.1.10) and expiry (queue_lifetime) each bring an RFC 3464 report
# (multipart/report, Action: failed, Status, Diagnostic-Code) from <> and
# remove the recipient, while an MX list whose best host is the relay itself
# is deferred (4.4.6), never bounced and never looped; a delay warning
# (delay_warning) says Action: delayed with Will-Retry-Until and keeps the
# mail; NOTIFY=NEVER and the null sender get nothing, and a bounce is never
# bounced.

import datetime
import email.utils
import re
import time

import pytest

from relayd_fixture import wait_until
from sink import DSN, Client, etrn, etrn_until_drained, message, subject_of

SENDER = "sender@sender.test"


def log_time(stamp):
    """Seconds since the epoch of a log line's ISO 8601 UTC time stamp."""
    return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def bounce_setup(denv, domains, mx=(), hosts=None, null_mx=(), site_hosts=(), **keys):
    """The sender's MTA (a sink on 127.0.0.1:P, MX of sender.test), optional MX
    sinks on site_hosts at the same port P (relayd's delivery_port), dnsmasq,
    and relayd. Returns (relayd, sender sink, {host: sink})."""
    port = denv.common_port(["127.0.0.1"] + list(site_hosts))
    back = denv.sink("sender-mta", port=port)
    sites = {h: denv.sink("mx-" + h, host=h, port=port) for h in site_hosts}
    h = {"mx.sender.test": "127.0.0.1"}
    h.update(hosts or {})
    d = denv.dns(mx=[("sender.test", "mx.sender.test", 10)] + list(mx), hosts=h, null_mx=null_mx)
    r = denv.relayd(domains=domains, dns_servers=d.server, delivery_port=str(port), connect_timeout="2s",
                    min_backoff="1s", max_backoff="2s", **keys)
    return r, back, sites


def check_dsn_envelope(t):
    assert t.mail_from == "", "a DSN comes from the null sender, not <%s>" % t.mail_from
    assert t.rcpt_addrs == [SENDER], t.rcpt_addrs
    d = DSN(t)
    assert d.msg["From"] and d.msg["Date"] and d.msg["Message-ID"], "DSN header fields missing"
    assert d.msg["To"] and SENDER in d.msg["To"], d.msg["To"]
    assert (d.msg.get("Auto-Submitted") or "").startswith("auto-replied"), d.msg.get("Auto-Submitted")
    assert "relay.test" in d.per_message.get("Reporting-MTA", ""), d.per_message.items()
    return d


def recipients_of(r, qid):
    m = r.queue.message(qid)
    return [] if m is None else [x["address"] for x in m["recipients"]]


def test_5xx_bounces_with_a_dsn(denv):
    site = denv.sink("site")
    site.behaviour.rcpt = lambda a: (550, "5.1.1 <%s>: no such user here" % a) if a.startswith("nobody") else None
    r, back, _ = bounce_setup(denv, {"example.org": {"mode": "hold", "route": "127.0.0.1:%d" % site.port}})
    with Client(r) as c:
        q1 = c.send(SENDER, ["nobody@example.org", "ok@example.org"], message("partly"))
        q2 = c.send("", ["nobody2@example.org"], message("from-null"))  # null sender: no DSN
    off = r.log_size()
    assert etrn(r, "example.org") == (253, "2.0.0 2 pending messages for node <example.org> started")
    (t,) = site.wait_for(1, 15)
    assert t.rcpt_addrs == ["ok@example.org"] and subject_of(t.data) == "partly"
    r.wait_log(r"%s: to=<nobody@example\.org>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, delay=[\d.]+, delays=[\d./]+, dsn=5\.1\.1, "
               r"status=bounced \(550 5\.1\.1 <nobody@example\.org>: no such user here\)" % (q1, site.port),
               since=off, timeout=10)
    r.wait_log(r"%s: sender non-delivery notification: [0-9A-Z]{14}" % q1, since=off, timeout=10)

    (b,) = back.wait_for(1, 20, "the DSN at the sender's MTA")
    d = check_dsn_envelope(b)
    assert len(d.recipients) == 1, "only the failed recipient is reported"
    rr = d.recipient("nobody@example.org")
    assert rr["Action"].strip() == "failed"
    assert rr["Status"].strip() == "5.1.1"
    diag = re.sub(r"\s+", " ", rr["Diagnostic-Code"])
    assert diag.startswith("smtp;") and "550 5.1.1 <nobody@example.org>: no such user here" in diag, diag
    assert rr.get("Remote-MTA", "").startswith("dns;"), rr.items()
    assert b"Subject: partly" in b.data, "the returned content carries the original header"

    # both recipients are finished and the message is gone; the bounce itself too
    wait_until(lambda: r.queue.message(q1) is None, 10, what="the bounced message to leave the queue")
    wait_until(lambda: r.queue.message(q2) is None, 10, what="the null sender's message to leave the queue")
    wait_until(lambda: r.queue.count() == 0, 10, what="the DSN to leave the queue once delivered")
    # an empty queue: every DSN made has been delivered (the sink records a
    # message before its 250, relayd removes it after), so this count is final
    assert back.count() == 1, "a DSN for the null sender's message: %r" % back.received()


def test_5xx_to_the_final_dot_bounces_every_recipient(denv):
    site = denv.sink("site")
    site.behaviour.data = [(554, "5.6.0 content refused")]
    r, back, _ = bounce_setup(denv, {"example.org": {"mode": "hold", "route": "127.0.0.1:%d" % site.port}})
    with Client(r) as c:
        # RFC 3461: RET=HDRS returns the header only; ENVID and ORCPT come back
        q = c.send(SENDER, ["a@example.org", "b@example.org"], message("refused", lines=["secret body"]),
                   mail_opts=["RET=HDRS", "ENVID=env-42"], rcpt_opts=["ORCPT=rfc822;Orig@Example.ORG"])
    assert etrn(r, "example.org")[0] == 253
    (b,) = back.wait_for(1, 20)
    d = check_dsn_envelope(b)
    assert d.per_message["Original-Envelope-Id"].strip() == "env-42", d.per_message.items()
    assert [p.get_content_type() for p in d.returned] == ["text/rfc822-headers"], d.returned
    assert b"Subject: refused" in b.data and b"secret body" not in b.data
    assert d.recipient("a@example.org")["Original-Recipient"].replace(" ", "") == "rfc822;Orig@Example.ORG"
    for a in ("a@example.org", "b@example.org"):
        rr = d.recipient(a)
        assert rr["Action"].strip() == "failed" and rr["Status"].strip() == "5.6.0", rr.items()
        assert "554 5.6.0 content refused" in re.sub(r"\s+", " ", rr["Diagnostic-Code"])
    wait_until(lambda: r.queue.message(q) is None, 10, what="the message to leave the queue")


def test_a_bounce_is_never_bounced(denv):
    """The sender's own MTA refuses the DSN with 5xx: it is dropped, not
    bounced again (to <>) and not retried."""
    site = denv.sink("site")
    site.behaviour.rcpt = lambda a: (550, "5.1.1 unknown")
    r, back, _ = bounce_setup(denv, {"example.org": {"mode": "hold", "route": "127.0.0.1:%d" % site.port}})
    back.behaviour.rcpt = lambda a: (550, "5.1.1 sender unknown too")
    with Client(r) as c:
        q = c.send(SENDER, ["u@example.org"], message("double"))
    assert etrn(r, "example.org")[0] == 253
    back.wait_event("rcpt sender@sender.test refused 550", 20)
    wait_until(lambda: r.queue.count() == 0, 15, what="the queue to be empty (no double bounce)")
    assert r.queue.message(q) is None
    conns = back.conns
    time.sleep(2.5)  # min_backoff 1 s: a retry would have come by now
    assert back.conns == conns and back.count() == 0
    assert not re.search(r"from=<>.*\n.*to=<>", r.log_text())


def test_null_mx_bounces(denv):
    r, back, _ = bounce_setup(denv, {"nullmx.test": {"mode": "hold", "route": "mx"}}, null_mx=["nullmx.test"])
    with Client(r) as c:
        q = c.send(SENDER, ["u@nullmx.test"], message("nowhere"))
    assert etrn(r, "nullmx.test")[0] == 253
    # RFC 7505 §4.2: 556 5.1.10
    r.wait_log(r"%s: to=<u@nullmx\.test>, relay=none, delay=[\d.]+, delays=[\d./]+, dsn=5\.1\.10, status=bounced \(.*null MX" % q,
               timeout=15)
    (b,) = back.wait_for(1, 20)
    rr = check_dsn_envelope(b).recipient("u@nullmx.test")
    assert rr["Action"].strip() == "failed" and rr["Status"].strip() == "5.1.10", rr.items()
    assert "null MX" in rr.get("Diagnostic-Code", ""), rr.items()
    assert "556" in rr.get("Diagnostic-Code", ""), rr.items()
    wait_until(lambda: r.queue.count() == 0, 10, what="the queue to be empty")


def test_relay_as_best_mx_defers_never_loops_never_bounces(denv):
    """relayd is the best MX of a domain: the mail is deferred with 4.4.6
    (RFC 5321 §5.1; deferred, not bounced, since a DNS slip must not return
    a site's mail), goes neither to the worse MX nor back into relayd, and
    no DSN goes out."""
    r, back, sites = bounce_setup(
        denv, {"loop.test": {"mode": "hold", "route": "mx"}},
        mx=[("loop.test", "relay.test", 5), ("loop.test", "backup.loop.test", 10)],
        hosts={"relay.test": "127.0.0.1", "backup.loop.test": "127.0.0.2"}, site_hosts=["127.0.0.2"])
    with Client(r) as c:
        q = c.send(SENDER, ["u@loop.test"], message("loop"))
    off = r.log_size()
    assert etrn(r, "loop.test")[0] == 253
    r.wait_log(r"mail for loop\.test loops back to myself", timeout=15, since=off)
    r.wait_log(r"%s: to=<u@loop\.test>, relay=none, .*dsn=4\.4\.6, status=deferred \(mail for loop\.test "
               r"loops back to myself\)" % q, timeout=15, since=off)
    r.wait_log(r"loop\.test: delivery deferred \(4\.4\.6 mail for loop\.test loops back to myself\)",
               timeout=15, since=off)
    assert r.queue.message(q) is not None
    assert back.conns == 0, "a DSN went out for a loop"
    # it went neither to the worse MX nor back into relayd itself
    assert sites["127.0.0.2"].conns == 0
    after = r.log_text()[off:]
    assert not re.search(r"from=<%s>, size=\d+, nrcpt=\d+ \(queue active\)" % re.escape(SENDER), after), \
        "the message came back into relayd:\n" + after


@pytest.mark.time_limit(60)
def test_expiry_returns_mail_with_4_4_7(denv):
    site = denv.sink("site", start=False)  # the site never comes
    r, back, _ = bounce_setup(denv, {"exp.test": {"mode": "hold", "route": "127.0.0.1:%d" % site.port,
                                                  "queue_lifetime": "3s"}})
    with Client(r) as c:
        q1 = c.send(SENDER, ["u@exp.test", "v@exp.test"], message("expires"))
        q2 = c.send(SENDER, ["never@exp.test"], message("never"), rcpt_opts=["NOTIFY=NEVER"])
        q3 = c.send("", ["null@exp.test"], message("null-sender"))
    arrival = max(r.queue.message(q)["arrival"] for q in (q1, q2))
    (b,) = back.wait_for(1, 15, "the expiry DSN")
    d = check_dsn_envelope(b)
    assert sorted(x["Final-Recipient"].split(";")[1].strip() for x in d.recipients) == ["u@exp.test", "v@exp.test"]
    for a in ("u@exp.test", "v@exp.test"):
        assert d.recipient(a)["Action"].strip() == "failed", d.recipient(a).items()
    assert b"Subject: expires" in b.data
    for q, a in ((q1, "u@exp\\.test"), (q2, "never@exp\\.test")):
        m = r.wait_log(r"^(\S+) relayd/\w+\[\d+\]: %s: to=<%s>, relay=none, delay=[\d.]+, delays=[\d./]+, dsn=4\.4\.7, status=expired, "
                       r"returned to sender" % (q, a), timeout=10)
        # not before queue_lifetime (3 s) from the arrival, on relayd's clock
        assert log_time(m.group(1)) >= arrival + 3, (m.group(0), arrival)
    # the null sender's message (a bounce) is dropped, not returned (to nobody)
    r.wait_log(r"%s: to=<null@exp\.test>, relay=none, delay=[\d.]+, delays=[\d./]+, dsn=4\.4\.7, status=expired, dropped" % q3,
               timeout=10)
    wait_until(lambda: all(r.queue.message(q) is None for q in (q1, q2, q3)), 10,
               what="expired messages to leave the queue")
    wait_until(lambda: r.queue.count() == 0, 10, what="the queue (and the delivered DSN) to be empty")
    # no DSN for NOTIFY=NEVER nor for the null sender: with the queue empty
    # every DSN made was delivered (recorded by the sink before its 250)
    assert back.count() == 1, "unexpected DSNs: %r" % back.received()
    assert etrn(r, "exp.test")[0] == 251
    # RFC 3463: 4.4.7 "delivery time expired", in the DSN as in the log
    for a in ("u@exp.test", "v@exp.test"):
        rr = d.recipient(a)
        assert rr["Status"].strip() == "4.4.7", rr.items()
        # relayd's own verdict (no remote reply to quote): RFC 3464 §2.3.6 lets
        # it name its own diagnostic-type
        assert rr["Diagnostic-Code"] == "X-Relayd; 4.4.7 delivery time expired", rr.items()


@pytest.mark.time_limit(60)
def test_delay_warning(denv):
    site = denv.sink("site", start=False)
    r, back, _ = bounce_setup(denv, {"slow.test": {"mode": "hold", "route": "127.0.0.1:%d" % site.port,
                                                   "queue_lifetime": "1h", "delay_warning": "2s"}})
    with Client(r) as c:
        q = c.send(SENDER, ["u@slow.test"], message("late"))
        qn = c.send(SENDER, ["n@slow.test"], message("late-never"), rcpt_opts=["NOTIFY=FAILURE"])
    arrival = r.queue.message(q)["arrival"]
    (b,) = back.wait_for(1, 15, "the delay warning")
    d = check_dsn_envelope(b)
    assert len(d.recipients) == 1, "NOTIFY=FAILURE asked for no delay warning"
    rr = d.recipient("u@slow.test")
    assert rr["Action"].strip() == "delayed", rr.items()
    assert rr["Status"].strip().startswith("4."), rr.items()
    until = rr.get("Will-Retry-Until")
    assert until, "a delay warning carries Will-Retry-Until: %r" % rr.items()
    ts = email.utils.parsedate_to_datetime(until.strip()).timestamp()
    assert abs(ts - (arrival + 3600)) <= 60, "Will-Retry-Until %s is not arrival + queue_lifetime" % until
    # the mail stays, marked as warned, and is warned about once
    # (the mark is committed after the DSN is, so it may land just after the DSN did)
    wait_until(lambda: r.queue.message(q)["recipients"][0]["warned"] == 1, 5, what="the recipient marked warned")
    assert r.queue.message(qn) is not None
    # the marker: a later message's own warning, 2 s on. The scan that sent it
    # also saw u@slow.test, warned already: no second warning came with it.
    with Client(r) as c:
        c.send(SENDER, ["m@slow.test"], message("marker"))
    b1, b2 = back.wait_for(2, 30, "the marker's delay warning")
    assert [x["Final-Recipient"].split(";")[1].strip() for x in check_dsn_envelope(b2).recipients] == \
        ["m@slow.test"], back.received()
    wait_until(lambda: r.queue.count() == 3, 20, what="the two warnings delivered")
    assert back.count() == 2, "a second delay warning: %r" % back.received()
    # and it is still delivered when the site asks
    site.start()
    assert etrn(r, "slow.test") == (253, "2.0.0 3 pending messages for node <slow.test> started")
    site.wait_for(3, 15)
    etrn_until_drained(r, "slow.test", 10)
