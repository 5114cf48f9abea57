# test_dsn_relayed: relayd(8) DELIVERY, "relayed" notifications (RFC 3461
# §5.2.2). A recipient that asked for NOTIFY=SUCCESS and is delivered to a
# site that does not offer DSN earns the sender an RFC 3464 report with
# Action: relayed and Status: 2.x.x, from <>, with the message's header only;
# recipients that did not ask get nothing; a failure in the same message
# gets its own non-delivery report; a site that offers DSN gets NOTIFY
# passed on and the sender gets no "relayed" report from relayd.

from relayd_fixture import wait_until
from sink import DSN, Client, etrn, message, subject_of

SENDER = "sender@sender.test"


def relay_setup(denv, site_offers_dsn):
    """The site (a sink, DSN offered or not) behind a hold domain, the
    sender's MTA (a sink found by MX through dnsmasq) and relayd."""
    port = denv.common_port(["127.0.0.1"])
    back = denv.sink("sender-mta", port=port)
    site = denv.sink("site")
    if not site_offers_dsn:
        site.behaviour.ehlo_extensions = [e for e in site.behaviour.ehlo_extensions if e != "DSN"]
    site.behaviour.rcpt = lambda a: (550, "5.1.1 <%s>: no such user here" % a) if a.startswith("nobody") else None
    d = denv.dns(mx=[("sender.test", "mx.sender.test", 10)], hosts={"mx.sender.test": "127.0.0.1"})
    r = denv.relayd(domains={"example.org": {"mode": "hold", "route": "127.0.0.1:%d" % site.port}},
                    dns_servers=d.server, delivery_port=str(port), connect_timeout="2s")
    return r, site, back


def check_envelope(t):
    assert t.mail_from == "", "a DSN comes from the null sender, not <%s>" % t.mail_from
    assert t.rcpt_addrs == [SENDER], t.rcpt_addrs
    return DSN(t)


def test_relayed_dsn_to_a_site_without_dsn(denv):
    r, site, back = relay_setup(denv, site_offers_dsn=False)
    with Client(r) as c:
        off = r.log_size()
        qid = c.send(SENDER, ["a@example.org"], message("asked", lines=["the secret body line"]),
                     mail_opts=["RET=FULL", "ENVID=env+2B1"],
                     rcpt_opts=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;Orig+2Ba@example.org"])
        q2 = c.send(SENDER, ["b@example.org"], message("not-asked"))
    assert etrn(r, "example.org")[0] == 253
    got = {subject_of(t.data): t for t in site.wait_for(2, 20, "both messages at the site")}
    # the site without DSN was not given NOTIFY (RFC 3461 §4.1)
    assert got["asked"].rcpts == [("a@example.org", "")], got["asked"].rcpts
    r.wait_log(r"%s: sender delivery status notification: [0-9A-Z]{14}" % qid, since=off, timeout=15)

    (b,) = back.wait_for(1, 20, "the relayed DSN at the sender's MTA")
    d = check_envelope(b)
    assert d.msg["Subject"] == "Successful Mail Delivery Report", d.msg["Subject"]
    assert "relay.test" in d.per_message.get("Reporting-MTA", ""), d.per_message.items()
    assert d.per_message.get("Original-Envelope-Id") == "env+1", d.per_message.items()
    assert d.per_message.get("Arrival-Date"), d.per_message.items()
    assert len(d.recipients) == 1, "only the recipient that asked is reported"
    rc = d.recipient("a@example.org")
    assert rc["Action"] == "relayed", rc.items()
    assert rc["Status"] == "2.0.0", rc.items()
    assert rc["Original-Recipient"] == "rfc822;Orig+a@example.org", rc.items()
    assert rc["Remote-MTA"] == "dns; 127.0.0.1[127.0.0.1]:%d" % site.port, rc.items()
    assert rc["Diagnostic-Code"].startswith("smtp; 250 2.0.0"), rc.items()
    # RFC 3461 §4.3: RET=FULL is for failures; a success report carries the header
    (ret,) = d.returned
    assert ret.get_content_type() == "text/rfc822-headers", ret.get_content_type()
    assert b"Subject: asked" in b.data and b"the secret body line" not in b.data
    # both are delivered and gone from the queue, the other without any notice
    wait_until(lambda: r.queue.message(qid) is None and r.queue.message(q2) is None, 15,
               what="both messages delivered and gone from the queue")
    assert r.log_lines(r"%s: sender .*notification" % q2, since=off) == []


def test_relayed_then_failed_in_one_message(denv):
    r, site, back = relay_setup(denv, site_offers_dsn=False)
    with Client(r) as c:
        off = r.log_size()
        qid = c.send(SENDER, ["ok@example.org", "nobody@example.org"], message("mixed"),
                     rcpt_opts=["NOTIFY=SUCCESS,FAILURE"])
    assert etrn(r, "example.org")[0] == 253
    site.wait_for(1, 20, "the message at the site")
    dsns = [check_envelope(t) for t in back.wait_for(2, 20, "a relayed and a non-delivery DSN")]
    by_action = {d.recipients[0]["Action"]: d for d in dsns}
    assert sorted(by_action) == ["failed", "relayed"], sorted(by_action)
    assert len(by_action["relayed"].recipients) == 1 and len(by_action["failed"].recipients) == 1
    by_action["relayed"].recipient("ok@example.org")
    f = by_action["failed"].recipient("nobody@example.org")
    assert f["Status"] == "5.1.1", f.items()
    r.wait_log(r"%s: sender delivery status notification: " % qid, since=off, timeout=10)
    r.wait_log(r"%s: sender non-delivery notification: " % qid, since=off, timeout=10)


def test_no_relayed_dsn_when_the_site_offers_dsn(denv):
    r, site, back = relay_setup(denv, site_offers_dsn=True)
    with Client(r) as c:
        off = r.log_size()
        qid = c.send(SENDER, ["ok@example.org", "nobody@example.org"], message("passed-on"),
                     rcpt_opts=["NOTIFY=SUCCESS,FAILURE"])
    assert etrn(r, "example.org")[0] == 253
    (t,) = site.wait_for(1, 20, "the message at the site")
    assert t.rcpts == [("ok@example.org", "NOTIFY=SUCCESS,FAILURE")], t.rcpts  # the site reports success
    # the positive marker: the non-delivery report for the 550 arrives, and it
    # is the only report (relayd would queue a "relayed" one before it)
    (b,) = back.wait_for(1, 20, "the non-delivery DSN")
    d = check_envelope(b)
    assert [x["Action"] for x in d.recipients] == ["failed"], [x.items() for x in d.recipients]
    r.wait_log(r"%s: sender non-delivery notification: " % qid, since=off, timeout=10)
    assert r.log_lines(r"delivery status notification", since=off) == []
    assert back.count() == 1
