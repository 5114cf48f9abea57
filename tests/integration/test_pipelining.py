# test_pipelining: RFC 2920 — commands written in one go are answered in order,
# one reply each, including whole transactions (message included) back to back
# in a single write.

from relayd_fixture import dot_stuff, make_message, queue_id_of, split_received


def test_envelope_in_one_write(relayd):
    c = relayd.raw()
    c.ehlo()
    c.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<u1@example.org>\r\nRCPT TO:<u2@example.org>\r\n"
           b"RCPT TO:<u@evil.test>\r\nRCPT TO:<u3@x.sub.test>\r\nDATA\r\n")
    codes = [r.code for r in c.replies(6)]
    assert codes == [250, 250, 250, 550, 250, 354], codes
    msg = make_message(subject="pipelined")
    c.send(msg + b".\r\nQUIT\r\n")
    r1, r2 = c.replies(2)
    qid = queue_id_of(r1)
    assert r2.code == 221, r2
    assert c.at_eof()
    m = relayd.queue.message(qid)
    assert [r["address"] for r in m["recipients"]] == ["u1@example.org", "u2@example.org", "u3@x.sub.test"]
    assert split_received(m["body"])[1] == msg


def test_greeting_ehlo_pipelined(relayd):
    """EHLO plus a whole envelope sent before reading anything."""
    c = relayd.raw(greet=False)
    c.send(b"EHLO client.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.org>\r\nNOOP\r\nRSET\r\n")
    rs = c.replies(6)
    assert [r.code for r in rs] == [220, 250, 250, 250, 250, 250], rs
    assert len(rs[1].lines) > 1  # the multi-line EHLO reply comes as one reply, in order


def test_two_transactions_in_one_write(relayd):
    m1 = make_message(subject="one", body_lines=["first", ".dotted"])
    m2 = make_message(subject="two", body_lines=["second"])
    c = relayd.raw()
    c.ehlo()
    c.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<u1@example.org>\r\nDATA\r\n" + dot_stuff(m1)
           + b".\r\nMAIL FROM:<c@d.test>\r\nRCPT TO:<u2@example.org>\r\nRCPT TO:<u3@example.org>\r\nDATA\r\n"
           + m2 + b".\r\nQUIT\r\n")
    rs = c.replies(10, timeout=20)
    assert [r.code for r in rs] == [250, 250, 354, 250, 250, 250, 250, 354, 250, 221], rs
    q1, q2 = queue_id_of(rs[3]), queue_id_of(rs[8])
    assert c.at_eof()
    a, b = relayd.queue.message(q1), relayd.queue.message(q2)
    assert a["sender"] == "a@b.test" and b["sender"] == "c@d.test"
    assert [r["address"] for r in a["recipients"]] == ["u1@example.org"]
    assert [r["address"] for r in b["recipients"]] == ["u2@example.org", "u3@example.org"]
    assert split_received(a["body"])[1] == m1
    assert split_received(b["body"])[1] == m2
    assert relayd.queue.count() == 2


def test_many_transactions_one_write(relayd):
    """50 messages in one write: 50 x (250, 250, 354, 250), in order, each stored."""
    blob = b""
    for i in range(50):
        blob += (b"MAIL FROM:<s%d@b.test>\r\nRCPT TO:<u%d@example.org>\r\nDATA\r\n" % (i, i)
                 + make_message(subject="n%d" % i) + b".\r\n")
    c = relayd.raw(timeout=30)
    c.ehlo()
    c.send(blob + b"QUIT\r\n")
    qids = []
    for i in range(50):
        rs = c.replies(4)
        assert [r.code for r in rs] == [250, 250, 354, 250], (i, rs)
        qids.append(queue_id_of(rs[3]))
    assert c.reply().code == 221
    for i, q in enumerate(qids):
        m = relayd.queue.message(q)
        assert m["sender"] == "s%d@b.test" % i
        assert b"Subject: n%d\r\n" % i in m["body"]


def test_smtplib_sendmail_pipelined(relayd):
    """smtplib.sendmail pipelines nothing, but a client reusing the session must work."""
    s = relayd.smtp()
    s.ehlo()
    refused = s.sendmail("a@b.test", ["u@example.org", "bad@evil.test"], make_message())
    assert list(refused) == ["bad@evil.test"]
    s.quit()
    assert relayd.queue.count() == 1
