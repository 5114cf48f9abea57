# test_size: RFC 1870 SIZE. A declared size over max_message_size is refused at
# MAIL; a body that grows past it is refused after the dot with 552 5.3.4 and
# not queued, and the session carries on normally afterwards.

from relayd_fixture import make_message, queue_id_of


def test_declared_size_too_big(relayd_factory):
    r = relayd_factory(max_message_size="64k")
    c = r.raw()
    c.ehlo()
    rep = c.expect("MAIL FROM:<a@b.test> SIZE=65537", 552)
    assert rep.line.startswith("552 5.3.4 "), rep
    rep = c.expect("MAIL FROM:<a@b.test> SIZE=18446744073709551615", 552)  # UINT64_MAX
    c.expect("MAIL FROM:<a@b.test> SIZE=1000", 250)


def test_declared_size_too_big_smtplib(relayd_factory):
    import smtplib

    r = relayd_factory(max_message_size="64k")
    s = r.smtp()
    s.ehlo()
    assert s.esmtp_features["size"] == "65536"
    code, text = s.mail("a@b.test", ["SIZE=100000"])
    assert code == 552 and text.startswith(b"5.3.4"), (code, text)
    try:
        s.sendmail("a@b.test", ["u@example.org"], b"x" * 100000)
        raise AssertionError("an oversized message was accepted")
    except smtplib.SMTPSenderRefused as e:
        assert e.smtp_code == 552
    assert r.queue.count() == 0


def test_body_too_big_after_dot(relayd_factory):
    r = relayd_factory(max_message_size="64k")
    c = r.raw()
    c.ehlo()
    c.expect("MAIL FROM:<a@b.test>", 250)  # no SIZE given: the limit is enforced while reading
    c.expect("RCPT TO:<u@example.org>", 250)
    c.expect("DATA", 354)
    big = make_message(subject="big", body_lines=["y" * 998] * 100)  # ~100 KB
    c.send(big)
    c.send(b".\r\n")
    rep = c.reply(timeout=20)
    assert rep.code == 552 and rep.line.startswith("552 5.3.4 "), rep
    assert r.queue.count() == 0
    # the session is usable afterwards
    c.expect("NOOP", 250)
    c.expect("RSET", 250)
    small = make_message(subject="small", body_lines=["z" * 998] * 50)  # ~50 KB, fits
    qid = queue_id_of(c.send_message("a@b.test", ["u@example.org"], small))
    assert r.queue.count() == 1
    assert r.queue.message(qid)["body"].endswith(small)


def test_declared_small_but_body_big(relayd_factory):
    """SIZE is a promise the client may break: the limit is on what arrives."""
    r = relayd_factory(max_message_size="64k")
    c = r.raw()
    c.ehlo()
    c.expect("MAIL FROM:<a@b.test> SIZE=100", 250)
    c.expect("RCPT TO:<u@example.org>", 250)
    c.expect("DATA", 354)
    c.send(b"Subject: liar\r\n\r\n" + (b"w" * 500 + b"\r\n") * 1000 + b".\r\n")
    rep = c.reply(timeout=20)
    assert rep.code == 552, rep
    assert r.queue.count() == 0
    c.expect("QUIT", 221)


def test_huge_body_is_discarded_not_buffered(relayd_factory):
    """20 MB sent at a 1 MB limit: 552 after the dot, daemon still healthy."""
    r = relayd_factory(max_message_size="1M")
    c = r.raw(timeout=60)
    c.ehlo()
    c.expect("MAIL FROM:<a@b.test>", 250)
    c.expect("RCPT TO:<u@example.org>", 250)
    c.expect("DATA", 354)
    chunk = (b"v" * 1022 + b"\r\n") * 1024
    for _ in range(20):
        c.send(chunk)
    c.send(b".\r\n")
    rep = c.reply(timeout=60)
    assert rep.code == 552, rep
    assert r.queue.count() == 0
    c2 = r.raw()
    c2.ehlo()
    queue_id_of(c2.send_message("a@b.test", ["u@example.org"], make_message()))
