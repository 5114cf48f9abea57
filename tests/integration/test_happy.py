# test_happy: the happy path with real clients (smtplib, swaks): each message is
# answered "250 2.0.0 Ok: queued as ID", is in the queue with its envelope, a
# Received: header and exactly the bytes sent (CRLF, dot-unstuffed), one body
# however many recipients, and is logged as "ID: from=<...>, size=N, nrcpt=N (queue active)".

import re
import subprocess

from relayd_fixture import make_message, only_crlf, queue_id_of, split_received

DOT_LINES = [
    "first line",
    ".leading dot",
    "..two dots",
    ".",
    "a line with a . inside",
    ". space after dot",
    "last line",
]


def check_received(hdr, qid, helo="client.test", proto="ESMTP"):
    text = hdr.decode("ascii")
    assert only_crlf(hdr), hdr
    assert text.startswith("Received: from %s ([127.0.0.1])\r\n\tby relay.test (relayd) with %s id %s"
                           % (helo, proto, qid)), text
    assert re.search(r"; .*\d{4} \d\d:\d\d:\d\d [+-]\d{4}( \(.*\))?\r\n$", text), "no date at the end: %r" % text


def check_logged(relayd, qid, sender, size, nrcpt):
    m = relayd.wait_log(r"%s: from=<%s>, size=(\d+), nrcpt=(\d+) \(queue active\)" % (qid, re.escape(sender)))
    assert int(m.group(2)) == nrcpt, m.group(0)
    assert int(m.group(1)) == size, (m.group(0), size)


def test_smtplib_message_stored_exactly(relayd):
    msg = make_message(subject="dots", body_lines=DOT_LINES)
    s = relayd.smtp()
    s.ehlo()
    assert s.mail("a@b.test")[0] == 250
    assert s.rcpt("u@example.org")[0] == 250
    code, text = s.data(msg)  # smtplib dot-stuffs; the server must unstuff
    qid = queue_id_of("%d %s" % (code, text.decode()))
    s.quit()

    m = relayd.queue.message(qid)
    assert m is not None, "acknowledged message %s is not in the queue" % qid
    assert m["sender"] == "a@b.test"
    assert m["client_addr"] == "127.0.0.1"
    assert m["client_helo"] == "client.test"
    assert [(r["address"], r["domain"]) for r in m["recipients"]] == [("u@example.org", "example.org")]
    hdr, rest = split_received(m["body"])
    assert rest == msg, "stored message differs from what was sent:\n%r\n%r" % (rest, msg)
    check_received(hdr, qid)
    assert only_crlf(m["body"])
    assert m["size"] in (len(m["body"]), len(msg)), (m["size"], len(m["body"]), len(msg))
    check_logged(relayd, qid, "a@b.test", m["size"], 1)
    relayd.wait_log(r"connect from unknown\[127\.0\.0\.1\]:\d+")
    relayd.wait_log(r"disconnect from unknown\[127\.0\.0\.1\]:\d+ .*ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5")


def test_multiple_recipients_one_body(relayd):
    rcpts = ["u1@example.org", "u2@example.org", "w@x.sub.test", "z@sub.test"]
    msg = make_message(subject="many")
    s = relayd.smtp()
    s.ehlo()
    s.mail("a@b.test")
    for r in rcpts:
        assert s.rcpt(r)[0] == 250
    code, text = s.data(msg)
    qid = queue_id_of("%d %s" % (code, text.decode()))
    s.quit()
    m = relayd.queue.message(qid)
    assert m["bodies"] == 1, "a body must be stored once however many recipients"
    assert relayd.queue.count() == 1
    assert [r["address"] for r in m["recipients"]] == rcpts
    doms = [r["domain"] for r in m["recipients"]]
    assert doms[:2] == ["example.org", "example.org"]
    assert doms[2] in ("x.sub.test", "sub.test") and doms[3] == "sub.test", doms
    assert split_received(m["body"])[1] == msg
    check_logged(relayd, qid, "a@b.test", m["size"], 4)


def test_swaks(relayd):
    body = "swaks body line\n.swaks dotted line\nend"
    p = subprocess.run(
        ["swaks", "--server", "127.0.0.1:%d" % relayd.port, "--helo", "swaks.test",
         "--from", "sender@b.test", "--to", "u@example.org,v@x.sub.test",
         "--header", "Subject: from swaks", "--body", body, "--timeout", "10"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 0, out
    m = re.search(r"<[-~] +(250 2\.0\.0 Ok: queued as \S+)", out)
    assert m, out
    qid = queue_id_of(m.group(1))
    msg = relayd.queue.message(qid)
    assert msg["sender"] == "sender@b.test"
    assert [r["address"] for r in msg["recipients"]] == ["u@example.org", "v@x.sub.test"]
    hdr, rest = split_received(msg["body"])
    check_received(hdr, qid, helo="swaks.test")
    assert b"Subject: from swaks\r\n" in rest
    # swaks dot-stuffed the second line; the server must have unstuffed it
    assert b"\r\n\r\nswaks body line\r\n.swaks dotted line\r\nend\r\n" in rest, rest
    check_logged(relayd, qid, "sender@b.test", msg["size"], 2)


def test_raw_exact_bytes_8bit_and_bare_lf(relayd):
    """8-bit bytes are kept; bare LF / bare CR inside the body become CRLF."""
    c = relayd.raw()
    c.ehlo()
    c.expect("MAIL FROM:<a@b.test> BODY=8BITMIME", 250)
    c.expect("RCPT TO:<u@example.org>", 250)
    c.expect("DATA", 354)
    sent = b"Subject: 8bit\r\n\r\ncaf\xc3\xa9 \xff\xfe\x80\r\nbare\nlf\rcr\r\n..dot\r\n"
    c.send(sent + b".\r\n")
    qid = queue_id_of(c.reply())
    m = relayd.queue.message(qid)
    rest = split_received(m["body"])[1]
    assert rest == b"Subject: 8bit\r\n\r\ncaf\xc3\xa9 \xff\xfe\x80\r\nbare\r\nlf\r\ncr\r\n.dot\r\n", rest
    assert m["body_8bit"] in (1, True)


def test_empty_and_headerless_messages(relayd):
    c = relayd.raw()
    c.ehlo()
    for sent in (b"", b"no headers at all\r\n"):
        qid = queue_id_of(c.send_message("a@b.test", ["u@example.org"], sent))
        assert split_received(relayd.queue.message(qid)["body"])[1] == sent


def test_large_message_exact(relayd):
    """A 3 MB body (spooled to disk, not held in RAM) arrives byte for byte."""
    lines = [("%07d " % i) + "x" * 70 for i in range(40000)]
    lines[100] = ".dot at start"
    msg = make_message(subject="big", body_lines=lines)
    s = relayd.smtp(timeout=60)
    s.ehlo()
    s.mail("a@b.test", ["SIZE=%d" % len(msg)])
    s.rcpt("u@example.org")
    code, text = s.data(msg)
    qid = queue_id_of("%d %s" % (code, text.decode()))
    s.quit()
    m = relayd.queue.message(qid)
    assert split_received(m["body"])[1] == msg


def test_several_messages_one_session(relayd):
    s = relayd.smtp()
    s.ehlo()
    qids = []
    for i in range(5):
        s.mail("a%d@b.test" % i)
        s.rcpt("u%d@example.org" % i)
        code, text = s.data(make_message(subject="n%d" % i))
        qids.append(queue_id_of("%d %s" % (code, text.decode())))
    s.quit()
    assert len(set(qids)) == 5
    for i, q in enumerate(qids):
        m = relayd.queue.message(q)
        assert m["sender"] == "a%d@b.test" % i
        assert b"Subject: n%d\r\n" % i in m["body"]
