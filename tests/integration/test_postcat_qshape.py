# test_postcat_qshape: the postcat and qshape habits of etrnctl(8), against
# the real daemon. `show --headers` prints the stored header section and
# nothing else, `--body` the body, both together the message without the
# envelope (postcat -h, -b, -hb), also when the empty line between them lies
# beyond relayd's first 64 KiB piece; relayd sends only the part asked for.
# `summary --senders` is qshape -s: the table by the envelope sender's
# domain (case folded, the null sender as MAILER-DAEMON).

import json
import os
import subprocess

from relayd_fixture import SANITIZER_MARKERS
from sink import Client, message

SENDER = "s@sender.test"


def etrnctl_binary():
    path = os.environ.get("ETRNCTL")
    if not path:
        builddir = os.environ.get("top_builddir")
        here = os.path.dirname(os.path.abspath(__file__))
        path = os.path.join(builddir, "etrnctl", "etrnctl") if builddir else \
            os.path.join(here, "..", "..", "etrnctl", "etrnctl")
    return os.path.abspath(path)


def etrnctl(r, *args):
    p = subprocess.run([etrnctl_binary(), "-S", r.keys["control_socket"]] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    assert not any(m.encode() in p.stderr for m in SANITIZER_MARKERS), p.stderr.decode()
    return p


def lf(b):
    return b.replace(b"\r\n", b"\n")


def check_parts(r, qid):
    stored = r.queue.message(qid)["body"]
    end = stored.index(b"\r\n\r\n")
    header, body = stored[:end + 2], stored[end + 4:]
    p = etrnctl(r, "show", "--headers", qid)
    assert p.returncode == 0, p.stderr
    assert p.stdout == lf(header), p.stdout[-300:]
    p = etrnctl(r, "show", "--body", qid)
    assert p.returncode == 0, p.stderr
    assert p.stdout == lf(body), p.stdout[:300]
    p = etrnctl(r, "show", "--headers", "--body", qid)
    assert p.returncode == 0, p.stderr
    assert p.stdout == lf(stored)
    # JSON: relayd itself sends only the part, and says which
    p = etrnctl(r, "--json", "show", "--headers", qid)
    assert p.returncode == 0, p.stderr
    rec = json.loads(p.stdout.splitlines()[0])
    assert rec["part"] == "header" and rec["body"].encode() == header, rec.get("part")
    assert len(p.stdout) < len(header) + len(header) // 10 + 2000, "more than the header was sent"
    p = etrnctl(r, "--json", "show", "--body", qid)
    rec = json.loads(p.stdout.splitlines()[0])
    assert rec["part"] == "body" and rec["body"].encode() == body
    # and the envelope view is unchanged
    p = etrnctl(r, "show", qid)
    assert p.returncode == 0 and b"queue_id: " + qid.encode() in p.stdout


def test_show_headers_and_body(relayd):
    with Client(relayd) as c:
        small = c.send(SENDER, ["u@example.org"], message("small", lines=["line one", "", "after a blank"]))
        # a header section larger than relayd's 64 KiB piece: the empty line
        # is found in the second piece; a body of several pieces
        hdrs = "".join("X-Filler-%d: %s\r\n" % (i, "h" * 70) for i in range(1200))
        big = ("From: s@sender.test\r\nSubject: big\r\n" + hdrs + "\r\n" +
               "\r\n".join("body line %d %s" % (i, "b" * 60) for i in range(3000)) + "\r\n").encode()
        large = c.send(SENDER, ["u@example.org"], big)
    check_parts(relayd, small)
    check_parts(relayd, large)


def test_show_part_without_a_body(relayd):
    with Client(relayd) as c:
        q = c.send(SENDER, ["u@example.org"], b"Subject: no body\r\n")
    stored = relayd.queue.message(q)["body"]
    assert b"\r\n\r\n" not in stored
    p = etrnctl(relayd, "show", "--headers", q)
    assert p.returncode == 0 and p.stdout == lf(stored), p.stdout
    p = etrnctl(relayd, "show", "--body", q)
    assert p.returncode == 0 and p.stdout == b"", p.stdout


def test_summary_by_sender_domain(relayd):
    with Client(relayd) as c:
        for i in range(3):
            c.send("a%d@a.example" % i, ["u@example.org"], message("a%d" % i))
        c.send("x@B.Example", ["u@example.org"], message("b1"))
        c.send("y@b.example", ["v@sub.test"], message("b2"))
        c.send("", ["u@example.org"], message("bounce"))
    p = etrnctl(relayd, "--json", "summary", "--senders")
    assert p.returncode == 0, p.stderr
    recs = {json.loads(l)["domain"]: json.loads(l) for l in p.stdout.splitlines()}
    assert {d: r["messages"] for d, r in recs.items()} == {"a.example": 3, "b.example": 2, "": 1}, recs
    assert all(sum(r["ages"]) == r["messages"] and r["ages"][0] == r["messages"] for r in recs.values())
    p = etrnctl(relayd, "summary", "--senders")
    assert p.returncode == 0, p.stderr
    rows = {l.split()[0]: l.split()[1] for l in p.stdout.decode().splitlines()[1:]}
    assert rows == {"TOTAL": "6", "a.example": "3", "b.example": "2", "MAILER-DAEMON": "1"}, rows
    # without --senders: by recipient domain, as before
    p = etrnctl(relayd, "--json", "summary")
    doms = {json.loads(l)["domain"]: json.loads(l)["messages"] for l in p.stdout.splitlines()}
    assert doms == {"example.org": 5, "sub.test": 1}, doms
