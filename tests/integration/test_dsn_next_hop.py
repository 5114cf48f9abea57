# test_dsn_next_hop: relayd(8) DELIVERY, "DSN parameters passed on when
# offered" (RFC 3461 §4): RET and ENVID on MAIL, NOTIFY and ORCPT on RCPT
# reach a next hop that advertises DSN exactly as the client gave them, and a
# next hop that does not advertise it gets none of them (§4.1: a relay must
# not send them to a server without the extension).

from sink import Client, etrn, message, subject_of

SENDER = "s@sender.test"


def deliver(denv, with_dsn):
    site = denv.sink("site")
    if not with_dsn:
        site.behaviour.ehlo_extensions = [e for e in site.behaviour.ehlo_extensions if e != "DSN"]
    r = denv.relayd(domains={"example.org": {"mode": "hold", "route": "127.0.0.1:%d" % site.port}})
    with Client(r) as c:
        c.send(SENDER, ["a@example.org"], message("full"), mail_opts=["RET=HDRS", "ENVID=env+2B1"],
               rcpt_opts=["NOTIFY=SUCCESS,DELAY", "ORCPT=rfc822;Orig+2Ba@Example.ORG"])
        c.send(SENDER, ["b@example.org"], message("never"), mail_opts=["RET=FULL"], rcpt_opts=["NOTIFY=NEVER"])
        c.send(SENDER, ["c@example.org"], message("none"))
    assert etrn(r, "example.org")[0] == 253
    return {subject_of(t.data): t for t in site.wait_for(3, 30, "three messages")}


def test_dsn_parameters_reach_a_next_hop_that_offers_dsn(denv):
    got = deliver(denv, True)
    # SIZE (RFC 1870, offered too) is the size of what is sent
    t = got["full"]
    assert t.mail_params == "SIZE=%d RET=HDRS ENVID=env+2B1" % len(t.data), t.mail_params
    assert t.rcpts == [("a@example.org", "NOTIFY=SUCCESS,DELAY ORCPT=rfc822;Orig+2Ba@Example.ORG")], t.rcpts
    t = got["never"]
    assert t.mail_params == "SIZE=%d RET=FULL" % len(t.data), t.mail_params
    assert t.rcpts == [("b@example.org", "NOTIFY=NEVER")], t.rcpts
    t = got["none"]
    assert t.mail_params == "SIZE=%d" % len(t.data), t.mail_params
    assert t.rcpts == [("c@example.org", "")], t.rcpts


def test_no_dsn_parameters_to_a_next_hop_without_dsn(denv):
    got = deliver(denv, False)
    for subject, rcpt in (("full", "a@example.org"), ("never", "b@example.org"), ("none", "c@example.org")):
        t = got[subject]
        assert t.mail_params == "SIZE=%d" % len(t.data), (subject, t.mail_params)
        assert t.rcpts == [(rcpt, "")], (subject, t.rcpts)
