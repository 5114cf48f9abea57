# test_bounce_size: what a DSN carries back. A message over bounce_size_limit
# (default 50000 bytes, as Postfix) comes back as its header section only
# (RFC 6522 text/rfc822-headers), with a line saying why; a small one whole
# (message/rfc822). A DSN that cannot be delivered is kept until its
# lifetime ends and then dropped with a log line, never bounced in turn.

import re

import pytest

from relayd_fixture import wait_until
from sink import Client, etrn, message
from test_bounce import SENDER, bounce_setup, check_dsn_envelope


def refusing_site(denv):
    site = denv.sink("site")
    site.behaviour.rcpt = lambda a: (550, "5.1.1 <%s>: no such user here" % a)
    return site


def test_large_message_returns_headers_small_returns_whole(denv):
    site = refusing_site(denv)
    r, back, _ = bounce_setup(denv, {"example.org": {"mode": "hold",
                                                     "route": "127.0.0.1:%d" % site.port}})
    big_line = "B" * 998
    big = message("big-one", to="a@example.org", lines=[big_line] * 60)  # ~60 kB > 50000
    # over 64 KiB: delivery streams it from the queue instead of holding it
    huge = message("huge-one", to="c@example.org", lines=[big_line] * 200)
    small = message("small-one", to="b@example.org", lines=["small body marker"])
    assert len(big) > 50000 and len(huge) > 65536 and len(small) < 1000
    with Client(r) as c:
        qb = c.send(SENDER, ["a@example.org"], big)
        qh = c.send(SENDER, ["c@example.org"], huge)
        qs = c.send(SENDER, ["b@example.org"], small)
    assert etrn(r, "example.org")[0] == 253
    dsns = back.wait_for(3, 20, "the three DSNs at the sender's MTA")
    by_subject = {}
    for t in dsns:
        d = check_dsn_envelope(t)
        subj = re.search(rb"Subject: (\S+)", t.data.split(b"Content-Description: Undelivered")[1])
        by_subject[subj.group(1).decode()] = (t, d)
    assert sorted(by_subject) == ["big-one", "huge-one", "small-one"], [t.data[:300] for t in dsns]

    for name in ("big-one", "huge-one"):
        t, d = by_subject[name]
        assert [p.get_content_type() for p in d.returned] == ["text/rfc822-headers"], d.returned
        assert big_line.encode() not in t.data, "the large body came back"
        assert b"Message-ID: <%s@sender.test>" % name.encode() in t.data
        human = d.human.get_payload(decode=True).decode()
        assert "larger than 50000 bytes, so only its header is" in human, human
        assert len(t.data) < 10000, len(t.data)

    t, d = by_subject["small-one"]
    assert [p.get_content_type() for p in d.returned] == ["message/rfc822"], d.returned
    assert b"small body marker" in t.data
    assert "larger than" not in d.human.get_payload(decode=True).decode()
    wait_until(lambda: r.queue.count() == 0, 15, what="the queue to be empty")
    for q in (qb, qh, qs):
        assert r.queue.message(q) is None


def test_bounce_size_limit_key(denv):
    # a limit above the message: returned whole after all
    site = refusing_site(denv)
    r, back, _ = bounce_setup(denv, {"example.org": {"mode": "hold",
                                                     "route": "127.0.0.1:%d" % site.port}},
                              bounce_size_limit="100k")
    big = message("big-two", to="a@example.org", lines=["C" * 998] * 60)
    with Client(r) as c:
        c.send(SENDER, ["a@example.org"], big)
    assert etrn(r, "example.org")[0] == 253
    (t,) = back.wait_for(1, 20)
    d = check_dsn_envelope(t)
    assert [p.get_content_type() for p in d.returned] == ["message/rfc822"], d.returned
    assert ("C" * 998).encode() in t.data


@pytest.mark.time_limit(60)
def test_undeliverable_dsn_is_dropped_after_its_lifetime(denv):
    site = refusing_site(denv)
    r, back, _ = bounce_setup(denv, {"example.org": {"mode": "hold",
                                                     "route": "127.0.0.1:%d" % site.port}},
                              queue_lifetime="3s")
    back.stop()  # the sender's MTA is gone: the DSN can only wait, then expire
    with Client(r) as c:
        q = c.send(SENDER, ["nobody@example.org"], message("orphan", to="nobody@example.org"))
    off = r.log_size()
    assert etrn(r, "example.org")[0] == 253
    m = r.wait_log(r"%s: sender non-delivery notification: ([0-9A-Z]{14})" % q, since=off,
                   timeout=15)
    dsn = m.group(1)
    # the DSN expires: dropped, with a line saying so, and nothing bounced for it
    r.wait_log(r"%s: to=<%s>, relay=none, delay=[\d.]+, delays=[\d./]+, dsn=4\.4\.7, status=expired, dropped"
               % (dsn, re.escape(SENDER)), since=off, timeout=30)
    r.wait_log(r"%s: sender non-delivery notification: none, dropped \(the sender is <>: "
               r"a bounce is never bounced\)" % dsn, since=off, timeout=10)
    wait_until(lambda: r.queue.count() == 0, 15, what="the queue to be empty")
    after = r.log_text()[off:]
    assert not re.search(r"%s: sender non-delivery notification: [0-9A-Z]{14}" % dsn, after), after
