# test_hopcount: mail loops are broken by counting Received: header fields
# (RFC 5321 §6.3): more than hopcount_limit (default 100) is refused with
# 554 5.4.6 and not queued; exactly the limit is accepted; "Received:" text in
# the body does not count.

from relayd_fixture import make_message, queue_id_of


def with_received(n, body_lines=None):
    hdrs = ["Received: from hop%d.test by hop%d.test; Mon, 1 Jan 2024 00:00:00 +0000" % (i, i + 1)
            for i in range(n)]
    return make_message(subject="hops %d" % n, extra_headers=hdrs, body_lines=body_lines)


def send(relayd, msg):
    c = relayd.raw()
    c.ehlo()
    c.expect("MAIL FROM:<a@b.test>", 250)
    c.expect("RCPT TO:<u@example.org>", 250)
    c.expect("DATA", 354)
    c.send(msg + b".\r\n")
    rep = c.reply(timeout=15)
    c.expect("NOOP", 250)  # the session survives either way
    return rep


def test_too_many_hops_refused(relayd):
    rep = send(relayd, with_received(101))
    assert rep.line.startswith("554 5.4.6") and "Too many hops" in rep.line, rep
    assert relayd.queue.count() == 0


def test_exactly_the_limit_accepted(relayd):
    qid = queue_id_of(send(relayd, with_received(100)))
    body = relayd.queue.message(qid)["body"]
    assert body.count(b"\r\nReceived: from hop") == 100  # ours comes first, then the 100


def test_received_in_body_does_not_count(relayd):
    lines = ["Received: from fake%d by fake; quoted in the body" % i for i in range(150)]
    queue_id_of(send(relayd, with_received(1, body_lines=lines)))


def test_folded_and_lowercase_received_count(relayd_factory):
    r = relayd_factory(hopcount_limit=5)
    hdrs = []
    for i in range(6):
        name = "received" if i % 2 else "RECEIVED"
        hdrs.append("%s: from h%d\r\n\tby h%d; Mon, 1 Jan 2024 00:00:00 +0000" % (name, i, i))
    rep = send(r, make_message(subject="folded", extra_headers=hdrs))
    assert rep.code == 554, rep
    assert r.queue.count() == 0
    queue_id_of(send(r, make_message(subject="five", extra_headers=hdrs[:5])))
