# test_smuggling: SMTP smuggling (CVE-2023-51766 class). Only CRLF.CRLF ends
# DATA: a bare LF or bare CR variant of the terminator must neither end the
# message early nor let a second, smuggled transaction be queued. What is
# stored has only CRLF line ends.

import pytest

from relayd_fixture import only_crlf, queue_id_of, split_received

VARIANTS = [
    ("lf_dot_lf", b"\n.\n"),
    ("cr_dot_cr", b"\r.\r"),
    ("lf_dot_crlf", b"\n.\r\n"),
    ("crlf_dot_lf", b"\r\n.\n"),
    ("cr_dot_crlf", b"\r.\r\n"),
    ("crlf_dot_cr", b"\r\n.\r"),
    ("crlf_dot_cr_lf_lf", b"\r\n.\r\r\n"),
]


def stored_as(data):
    """What relayd(8) DATA says is stored for message bytes `data` (the
    terminating CRLF.CRLF not included): a bare LF or bare CR ends a line and
    is stored as CRLF; only a line that starts after a real CRLF (or at the
    start) loses a leading dot; every line ends in CRLF."""
    out = []
    pos, after_crlf = 0, True
    while pos < len(data):
        end, nxt, real = len(data), len(data), False
        for i in range(pos, len(data)):
            if data[i : i + 2] == b"\r\n":
                end, nxt, real = i, i + 2, True
                break
            if data[i : i + 1] in (b"\r", b"\n"):
                end, nxt = i, i + 1
                break
        line = data[pos:end]
        if after_crlf and line.startswith(b"."):
            line = line[1:]
        out.append(line + b"\r\n")
        pos, after_crlf = nxt, real
    return b"".join(out)


def smuggle(relayd, variant, split=None):
    c = relayd.raw()
    c.ehlo()
    c.expect("MAIL FROM:<a@b.test>", 250)
    c.expect("RCPT TO:<u@example.org>", 250)
    c.expect("DATA", 354)
    payload = (b"Subject: smuggling\r\n\r\nbefore" + variant
               + b"MAIL FROM:<x@y.test>\r\nRCPT TO:<v@example.org>\r\nDATA\r\nsmuggled\r\n.\r\n")
    if split is None:
        c.send(payload)
    else:
        # the same bytes in tiny writes, so the terminator straddles reads
        import time

        for i in range(0, len(payload), split):
            c.send(payload[i : i + split])
            time.sleep(0.002)
    rep = c.reply(timeout=15)
    qid = queue_id_of(rep)
    c.send(b"QUIT\r\n")
    rest = [c.reply()]
    assert rest[0].code == 221, "a second reply after the dot: %r" % rest
    assert c.at_eof()
    assert relayd.queue.count() == 1, relayd.queue.messages()
    m = relayd.queue.message(qid)
    body = m["body"]
    assert split_received(body)[1] == stored_as(payload[: -len(b".\r\n")]), body
    assert only_crlf(body), body
    assert [r["address"] for r in m["recipients"]] == ["u@example.org"]
    assert m["sender"] == "a@b.test"


@pytest.mark.parametrize("name,variant", VARIANTS, ids=[v[0] for v in VARIANTS])
def test_smuggling_variant(relayd, name, variant):
    smuggle(relayd, variant)


@pytest.mark.parametrize("name,variant", VARIANTS[:4], ids=[v[0] for v in VARIANTS[:4]])
def test_smuggling_variant_split_writes(relayd, name, variant):
    smuggle(relayd, variant, split=3)


def test_real_terminator_split_across_writes(relayd):
    """CRLF.CRLF still ends DATA when it arrives one byte per write."""
    import time

    c = relayd.raw()
    c.ehlo()
    c.expect("MAIL FROM:<a@b.test>", 250)
    c.expect("RCPT TO:<u@example.org>", 250)
    c.expect("DATA", 354)
    c.send(b"Subject: slow\r\n\r\nbody")
    for b in b"\r\n.\r\n":
        time.sleep(0.02)
        c.send(bytes([b]))
    qid = queue_id_of(c.reply())
    assert relayd.queue.message(qid)["body"].endswith(b"\r\nbody\r\n")
