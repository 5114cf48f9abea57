# test_control: relayd's control socket (issue 4), spoken to directly over
# AF_UNIX the way etrnctl speaks to it: one request line, JSON records, a
# final {"ok":...} line, then EOF. Every command against a relayd with a
# known queue (mail sent with smtplib to hold domains, the sites played by
# recording sinks): listings and their filters, show, summary, domains, hold
# then release, flush by domain and by id delivering only what was asked,
# delete, requeue, bounce (the DSN lands at the sender's sink), stats,
# reload; protocol errors, limits and timeouts; socket mode, group and the
# peer-credential rules, checked with clients running as nobody.

import codecs
import json
import os
import re
import socket
import stat
import subprocess
import sys
import textwrap
import time

import pytest

from relayd_fixture import Relayd, wait_until
from sink import DSN, Client, message, subject_of

SENDER = "sender@sender.test"
NOBODY = 65534  # nobody and nogroup on Debian


# --- the protocol, client side ------------------------------------------------------------

def _relayd_bytes(err):
    """Decode error handler: a byte that is not UTF-8 is the code point of the
    same value, as relayd's \\u00XX escape says."""
    bad = err.object[err.start:err.end]
    return "".join(chr(b) for b in bad), err.end


codecs.register_error("relayd-bytes", _relayd_bytes)


def pct(s):
    """Percent-encode a key or value as the protocol asks."""
    out = []
    for b in s.encode():
        if b < 0x21 or b >= 0x7F or b in b"%=":
            out.append("%%%02X" % b)
        else:
            out.append(chr(b))
    return "".join(out)


def raw_request(path, data, timeout=20, eof=False):
    """Send data as it is (then EOF if asked), read everything until the
    server closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(data)
        if eof:
            s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            c = s.recv(65536)
            if not c:
                break
            chunks.append(c)
    return b"".join(chunks)


def parse_response(data):
    """(records, final): every line is one JSON object, the last one final."""
    assert data.endswith(b"\n"), "response not ended by a newline: %r" % data[-200:]
    lines = data[:-1].split(b"\n")
    objs = []
    for line in lines:
        obj = json.loads(line.decode("utf-8"))  # strict: relayd writes valid UTF-8 only
        assert isinstance(obj, dict), line
        objs.append(obj)
    final = objs.pop()
    assert "ok" in final and isinstance(final["ok"], bool), final
    if final["ok"]:
        assert final == {"ok": True}, final
    else:
        assert final["code"] in ("usage", "denied", "notfound", "internal"), final
        assert isinstance(final["error"], str) and final["error"], final
    for o in objs:
        assert "ok" not in o, "a record after the final line? %r" % o
    return objs, final


def ctl_path(r):
    return r.keys["control_socket"]


def ctl(r, command, **args):
    """Run a command; args may be lists (a repeated key). Returns (records, final)."""
    words = [command]
    for k, v in args.items():
        for one in v if isinstance(v, (list, tuple)) else [v]:
            words.append("%s=%s" % (pct(k), pct(str(one))))
    return parse_response(raw_request(ctl_path(r), (" ".join(words) + "\n").encode()))


def ok(r, command, **args):
    recs, final = ctl(r, command, **args)
    assert final == {"ok": True}, "%s %r -> %r" % (command, args, final)
    return recs


def fails(r, code, command, **args):
    recs, final = ctl(r, command, **args)
    assert final["ok"] is False and final["code"] == code, "%s %r -> %r" % (command, args, final)
    assert recs == [], recs
    return final


# A client running as another user: a separate Python that connects, sends the
# request and prints what came back (or the connect error) as JSON.
CLIENT = textwrap.dedent("""
    import json, socket, sys
    path, req = sys.argv[1], sys.argv[2].encode()
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(20)
        s.connect(path)
    except OSError as e:
        print(json.dumps({"connect_error": e.errno}))
        sys.exit(0)
    s.sendall(req + b"\\n")
    data = b""
    while True:
        c = s.recv(65536)
        if not c:
            break
        data += c
    print(json.dumps({"response": data.decode("utf-8")}))
""")


def as_user(path, request, uid=NOBODY, gid=NOBODY):
    """Run one request as uid/gid with no supplementary groups."""

    def drop():
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)

    p = subprocess.run([sys.executable, "-c", CLIENT, path, request], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, preexec_fn=drop, timeout=30)
    assert p.returncode == 0, p.stderr.decode()
    out = json.loads(p.stdout.decode())
    if "connect_error" in out:
        return out
    return parse_response(out["response"].encode())


# --- set-ups -----------------------------------------------------------------------------

def sent(client, sender, rcpts, uid):
    return client.send(sender, rcpts, message(uid, to=rcpts[0], sender=sender))


def known_queue(r):
    """Three messages: q1 alice -> example.org, q2 bob -> example.org and a
    subdomain of sub.test, q3 alice -> sub.test."""
    with Client(r) as c:
        q1 = sent(c, "alice@a.test", ["u1@example.org"], "m1")
        q2 = sent(c, "Bob@B.test", ["u2@example.org", "x@host.sub.test"], "m2")
        q3 = sent(c, "alice@a.test", ["y@sub.test"], "m3")
    return q1, q2, q3


def ids(recs):
    return [x["queue_id"] for x in recs]


def sites(denv, names, **keys):
    """A sink per hold domain in names (route to it) and relayd."""
    sinks = {n: denv.sink(n) for n in names}
    domains = {n: {"mode": "hold", "route": "127.0.0.1:%d" % s.port} for n, s in sinks.items()}
    r = denv.relayd(domains=domains, connect_timeout="2s", min_backoff="1s", max_backoff="2s", **keys)
    return r, sinks


# --- listings ----------------------------------------------------------------------------

def test_queue_lists_every_message_with_postqueue_fields(relayd):
    q1, q2, q3 = known_queue(relayd)
    recs = ok(relayd, "queue")
    assert ids(recs) == [q1, q2, q3]
    now = time.time()
    for rec in recs:
        row = relayd.queue.message(rec["queue_id"])
        assert rec["queue_name"] == "deferred"
        assert rec["arrival_time"] == row["arrival"] and abs(rec["arrival_time"] - now) < 60
        assert rec["message_size"] == row["size"] == len(row["body"])
        assert rec["sender"] == row["sender"]
        # hold domains: no retry time, they wait for ETRN (issue 9)
        assert rec["attempts"] == 0 and rec["next_attempt"] is None and rec["waiting"] == "ETRN"
        assert [x["address"] for x in rec["recipients"]] == [x["address"] for x in row["recipients"]]
        assert rec["domain"] == row["recipients"][0]["domain"]
        for x in rec["recipients"]:
            assert set(x) == {"address", "domain", "delay_reason", "attempts", "next_attempt", "waiting",
                              "held"}, x
            assert x["delay_reason"] == "" and x["held"] is False
            assert x["next_attempt"] is None and x["waiting"] == "ETRN"
    assert recs[1]["sender"] == "Bob@B.test"
    assert [x["domain"] for x in recs[1]["recipients"]] == ["example.org", "host.sub.test"]


def test_queue_filters(relayd):
    q1, q2, q3 = known_queue(relayd)
    assert ids(ok(relayd, "queue", domain="example.org")) == [q1, q2]
    assert ids(ok(relayd, "queue", domain="EXAMPLE.ORG.")) == [q1, q2]
    assert ids(ok(relayd, "queue", domain="sub.test")) == [q3]
    assert ids(ok(relayd, "queue", domain=".sub.test")) == [q2, q3]  # and below it
    assert ids(ok(relayd, "queue", domain=".ub.test")) == []  # whole labels only
    assert ids(ok(relayd, "queue", sender="ALICE@")) == [q1, q3]  # substring, any case
    assert ids(ok(relayd, "queue", sender="bob@b.test")) == [q2]
    assert ids(ok(relayd, "queue", recipient="u2@example")) == [q2]
    assert ids(ok(relayd, "queue", recipient="@EXAMPLE.org", sender="alice")) == [q1]
    assert ids(ok(relayd, "queue", older_than="3600")) == []
    time.sleep(1.1)
    assert ids(ok(relayd, "queue", older_than="0")) == [q1, q2, q3]
    assert ids(ok(relayd, "queue", limit="2")) == [q1, q2]
    assert ids(ok(relayd, "queue", held="1")) == []
    assert ids(ok(relayd, "queue", held="0")) == [q1, q2, q3]
    # percent-encoded values: a space and an '=' are data
    assert ids(ok(relayd, "queue", sender="no such=sender")) == []
    fails(relayd, "usage", "queue", older_than="soon")
    fails(relayd, "usage", "queue", limit="0")
    fails(relayd, "usage", "queue", held="yes")
    fails(relayd, "usage", "queue", domain=".")


def test_queue_listing_pages_through_a_long_queue(relayd):
    """More messages than one store page (200): all of them, in order, once."""
    n = 450
    with Client(relayd) as c:
        want = [sent(c, "bulk@a.test", ["u%d@example.org" % i], "bulk%d" % i) for i in range(n)]
    recs = ok(relayd, "queue")
    assert ids(recs) == want
    assert ids(ok(relayd, "queue", limit="201")) == want[:201]


def test_show_gives_envelope_and_body(relayd):
    body = (b"From: a@b.test\r\nTo: u@example.org\r\nSubject: show me\r\n\r\n"
            b"caf\xc3\xa9 \xff\xfe byte \"quoted\" back\\slash\ttab\x01\r\n")
    with Client(relayd) as c:
        c.s.ehlo()
        code, _ = c.s.mail(SENDER, ["BODY=8BITMIME", "ENVID=env+2B42"])
        assert code == 250
        assert c.s.rcpt("u@example.org")[0] == 250
        code, text = c.s.data(body)
        assert code == 250, text
        qid = text.decode().split()[-1]
    (rec,) = ok(relayd, "show", id=qid)
    row = relayd.queue.message(qid)
    assert rec["queue_id"] == qid and rec["sender"] == SENDER
    assert rec["envid"] == "env+2B42"
    assert rec["client_addr"] == "127.0.0.1" and rec["client_helo"] == "client.test"
    assert isinstance(rec["dsn_ret"], int)
    assert rec["recipients"][0]["address"] == "u@example.org"
    # the stored body exactly: UTF-8 as it is, other bytes as \u00XX
    assert rec["body"] == row["body"].decode("utf-8", "relayd-bytes")
    assert "café" in rec["body"] and "\u00ff\u00fe" in rec["body"]
    raw = raw_request(ctl_path(relayd), b"show id=" + qid.encode() + b"\n")
    assert b"\\u00ff\\u00fe" in raw and b"\\u0001" in raw and b'\\"quoted\\"' in raw
    fails(relayd, "notfound", "show", id="0000000000000Z")
    fails(relayd, "usage", "show")
    fails(relayd, "usage", "show", id=[qid, qid])


def big_body():
    """About 6 MB: mostly \\x01 (6 bytes each once JSON-escaped) with 2-, 3- and
    4-byte UTF-8 sequences all through it, so the 64 KiB chunks relayd reads
    the body in cut some of them in two."""
    line = ("\x01" * 40 + "caf\u00e9 \u20ac \U0001F4E7 x" * 3).encode() + b"\r\n"
    head = b"From: a@b.test\r\nTo: u@example.org\r\nSubject: big\r\n\r\n"
    return head + line * (6 * 1024 * 1024 // len(line))


def queue_big(r):
    body = big_body()
    with Client(r) as c:
        c.s.ehlo()
        assert c.s.mail(SENDER, ["BODY=8BITMIME"])[0] == 250
        assert c.s.rcpt("u@example.org")[0] == 250
        code, text = c.s.data(body)
        assert code == 250, text
        return text.decode().split()[-1], body


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for %d" % pid)


def start_show(r, qid, first=65536):
    """A show whose client reads its first bytes and then stops reading."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(ctl_path(r))
    s.sendall(b"show id=" + qid.encode() + b"\n")
    got = b""
    while len(got) < first:
        c = s.recv(first - len(got))
        assert c, "connection closed after %d bytes" % len(got)
        got += c
    return s, got


def read_rest(s, got):
    while True:
        c = s.recv(1 << 20)
        if not c:
            break
        got += c
    s.close()
    return got


def test_show_streams_the_body_in_bounded_memory(relayd_factory):
    """Four clients that stop reading a 6 MB show cost relayd a few chunks
    each, not the escaped body (~36 MB each); each still gets the body
    exactly, UTF-8 cut at chunk ends included."""
    r = relayd_factory(max_message_size="20M")
    qid, _ = queue_big(r)
    body = r.queue.message(qid)["body"]  # with relayd's Received: field
    before = rss_kib(r.pid)
    shows = [start_show(r, qid) for _ in range(4)]
    # every client has its first bytes: relayd is past the start of each show
    grown = rss_kib(r.pid) - before
    assert grown < 24 * 1024, "relayd grew by %d KiB for four stalled shows" % grown
    # all four read at once: relayd drops a client whose write makes no
    # progress for 10 s, and reading ~36 MB each one after the other can take
    # longer than that on a loaded machine
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        texts = list(pool.map(lambda sg: read_rest(*sg), shows))
    for text in texts:
        (rec,), final = parse_response(text)
        assert final == {"ok": True}
        assert "truncated" not in rec
        assert rec["body"] == body.decode("utf-8", "relayd-bytes")
    assert rec["message_size"] == len(body)


def test_show_of_a_message_deleted_mid_stream_ends_with_an_error(relayd_factory):
    r = relayd_factory(max_message_size="20M")
    qid, _ = queue_big(r)
    body = r.queue.message(qid)["body"]
    s, got = start_show(r, qid)
    assert ok(r, "delete", id=qid) == [{"deleted": 1}]
    assert r.queue.count() == 0
    (rec,), final = parse_response(read_rest(s, got))
    assert final["ok"] is False and final["code"] == "notfound", final
    assert "left the queue" in final["error"], final
    assert rec["truncated"] is True and rec["queue_id"] == qid
    full = body.decode("utf-8", "relayd-bytes")
    assert 0 < len(rec["body"]) < len(full) and full.startswith(rec["body"])
    # the daemon goes on
    assert ok(r, "queue") == []


def test_summary_counts_bytes_and_ages_per_domain(relayd):
    q1, q2, q3 = known_queue(relayd)
    recs = ok(relayd, "summary")
    by = {x["domain"]: x for x in recs}
    assert sorted(by) == ["example.org", "host.sub.test", "sub.test"]
    size = {q: relayd.queue.message(q)["size"] for q in (q1, q2, q3)}
    assert by["example.org"]["messages"] == 2
    assert by["example.org"]["bytes"] == size[q1] + size[q2]
    assert by["host.sub.test"]["messages"] == 1 and by["host.sub.test"]["bytes"] == size[q2]
    for x in recs:
        assert x["bucket_limits"] == [300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 76800]
        assert len(x["ages"]) == 10 and x["ages"][0] == x["messages"] and sum(x["ages"]) == x["messages"]


def test_domains_merges_queue_and_configuration(relayd):
    q1, q2, q3 = known_queue(relayd)
    ok(relayd, "hold", id=q1)
    recs = ok(relayd, "domains")
    by = {x["domain"]: x for x in recs}
    assert [x["domain"] for x in recs] == sorted(by)
    assert set(by) == {"example.org", "sub.test", "host.sub.test"}
    keys = {"domain", "mode", "route", "messages", "bytes", "oldest", "last_etrn", "last_delivery",
            "last_error", "last_error_at", "next_expiry", "held_messages", "configured", "flushing"}
    for x in recs:
        assert set(x) == keys, x
        assert x["mode"] == "hold" and x["route"] == "mx" and x["configured"] is True
    e = by["example.org"]
    arrival = relayd.queue.message(q1)["arrival"]
    assert e["messages"] == 2 and e["held_messages"] == 1 and e["oldest"] == arrival
    assert e["next_expiry"] == arrival + 5 * 86400  # queue_lifetime's default
    assert e["last_etrn"] is None and e["last_error"] is None and e["flushing"] is False
    s = by["sub.test"]
    assert s["messages"] == 1 and s["held_messages"] == 0
    assert by["host.sub.test"]["configured"] is True  # through sub.test's subdomains = yes


def test_domains_lists_a_configured_domain_without_mail(relayd_factory):
    r = relayd_factory(domains={"quiet.test": {"mode": "retry", "route": "127.0.0.1:9"}})
    (rec,) = ok(r, "domains")
    assert rec["domain"] == "quiet.test" and rec["mode"] == "retry" and rec["route"] == "127.0.0.1:9"
    assert rec["messages"] == 0 and rec["oldest"] is None and rec["next_expiry"] is None
    assert ok(r, "summary") == [] and ok(r, "queue") == []


# --- hold, release, flush -------------------------------------------------------------------

def runs_over(r, *domains):
    """Wait (bounded) until no delivery run is going for any of domains: the
    positive marker that whatever a flush was going to deliver, it has."""
    def idle():
        by = {x["domain"]: x for x in ok(r, "domains")}
        return all(not by[d]["flushing"] for d in domains if d in by)

    wait_until(idle, 30, what="the delivery runs of %s to end" % ", ".join(domains))


def test_hold_then_release(denv):
    r, s = sites(denv, ["example.org"])
    site = s["example.org"]
    with Client(r) as c:
        q1 = sent(c, SENDER, ["a@example.org"], "held-one")
        q2 = sent(c, SENDER, ["b@example.org"], "free-one")
    assert ok(r, "hold", id=q1) == [{"held": 1}]
    assert ok(r, "hold", id=q1) == [{"held": 0}]  # held already
    fails(r, "notfound", "hold", id="0000000000000Z")
    (rec,) = ok(r, "queue", held="1")
    assert rec["queue_id"] == q1 and rec["queue_name"] == "hold" and rec["recipients"][0]["held"] is True
    assert [x["queue_name"] for x in ok(r, "queue")] == ["hold", "deferred"]
    assert r.queue.message(q1)["recipients"][0]["state"] == 1

    # a flush delivers what is not held, and leaves the held message
    assert ok(r, "flush", domain="example.org") == [{"domain": "example.org", "messages": 1}]
    (t,) = site.wait_for(1, 15)
    assert subject_of(t.data) == "free-one"
    wait_until(lambda: r.queue.message(q2) is None, 10, what="the delivered message to leave the queue")
    runs_over(r, "example.org")
    assert site.count() == 1
    assert ids(ok(r, "queue")) == [q1]
    assert ok(r, "flush", domain="example.org") == []  # only held mail: nothing starts

    assert ok(r, "release", id=q1) == [{"released": 1}]
    assert ok(r, "queue", held="1") == []
    assert ok(r, "flush", domain="example.org") == [{"domain": "example.org", "messages": 1}]
    site.wait_for(2, 15)
    assert subject_of(site.received()[1].data) == "held-one"
    wait_until(lambda: r.queue.count() == 0, 10, what="an empty queue")


def test_hold_and_release_by_domain(denv):
    r, s = sites(denv, ["example.org", "example.net"])
    with Client(r) as c:
        qa = sent(c, SENDER, ["a@example.org", "b@example.net"], "both")
        qb = sent(c, SENDER, ["c@example.net"], "net")
    assert ok(r, "hold", domain="example.net") == [{"held": 2}]
    recs = ok(r, "queue", held="1")
    assert ids(recs) == [qa, qb]
    assert [x["held"] for x in recs[0]["recipients"]] == [False, True]  # only that domain's
    assert ok(r, "flush", all="1") == [{"domain": "example.org", "messages": 1}]
    s["example.org"].wait_for(1, 15)
    runs_over(r, "example.org", "example.net")
    assert s["example.net"].count() == 0
    assert ok(r, "release", domain="example.net") == [{"released": 2}]
    assert ok(r, "flush", domain="example.net") == [{"domain": "example.net", "messages": 2}]
    s["example.net"].wait_for(2, 15)
    wait_until(lambda: r.queue.count() == 0, 10, what="an empty queue")


def test_flush_by_domain_delivers_only_that_domain(denv):
    r, s = sites(denv, ["example.org", "example.net"])
    with Client(r) as c:
        org = [sent(c, SENDER, ["u%d@example.org" % i], "org%d" % i) for i in range(3)]
        net = sent(c, SENDER, ["u@example.net"], "net")
    recs = ok(r, "flush", domain="example.org")
    assert recs == [{"domain": "example.org", "messages": 3}]
    got = s["example.org"].wait_for(3, 15)
    assert sorted(subject_of(t.data) for t in got) == ["org0", "org1", "org2"]
    wait_until(lambda: all(r.queue.message(q) is None for q in org), 10, what="example.org's mail delivered")
    runs_over(r, "example.org", "example.net")
    assert s["example.net"].count() == 0 and s["example.net"].conns == 0
    assert ids(ok(r, "queue")) == [net]
    # the delivery is recorded (domain_state, written after the run); no
    # ETRN came, so last_etrn stays empty

    def org():
        (d,) = [x for x in ok(r, "domains") if x["domain"] == "example.org"]
        return d if d["last_delivery"] is not None else None

    d = wait_until(org, 10, what="last_delivery of example.org")
    assert d["messages"] == 0 and d["last_etrn"] is None


def test_flush_by_id_and_all(denv):
    r, s = sites(denv, ["example.org", "example.net"])
    with Client(r) as c:
        qn = sent(c, SENDER, ["u@example.net"], "net")
        qo = sent(c, SENDER, ["u@example.org"], "org")
    assert ok(r, "flush", id=qn) == [{"domain": "example.net", "messages": 1}]
    s["example.net"].wait_for(1, 15)
    runs_over(r, "example.net", "example.org")
    assert s["example.org"].count() == 0
    fails(r, "notfound", "flush", id="0000000000000Z")
    assert ok(r, "flush", all="1") == [{"domain": "example.org", "messages": 1}]
    s["example.org"].wait_for(1, 15)
    wait_until(lambda: r.queue.message(qo) is None, 10, what="the flushed message delivered")
    assert ok(r, "flush", all="1") == []
    fails(r, "usage", "flush")
    fails(r, "usage", "flush", domain="example.org", all="1")
    fails(r, "usage", "flush", all="2")


# --- delete, requeue, bounce ---------------------------------------------------------------

def test_delete(relayd):
    q1, q2, q3 = known_queue(relayd)
    assert ok(relayd, "delete", id=[q1, q3]) == [{"deleted": 2}]
    assert relayd.queue.message(q1) is None and relayd.queue.message(q3) is None
    assert ids(ok(relayd, "queue")) == [q2]
    assert relayd.queue.query("SELECT count(*) AS n FROM message_body")[0]["n"] == 1
    fails(relayd, "notfound", "delete", id=q1)
    fails(relayd, "usage", "delete")  # never everything by accident
    assert ok(relayd, "delete", all="1") == [{"deleted": 1}]
    assert relayd.queue.count() == 0
    assert relayd.queue.query("SELECT count(*) AS n FROM recipient")[0]["n"] == 0


def test_requeue_resets_the_retry_state(denv):
    r, s = sites(denv, ["example.org"])
    s["example.org"].behaviour.rcpt = lambda a: (451, "4.3.0 try again later")
    with Client(r) as c:
        q = sent(c, SENDER, ["a@example.org"], "retry-me")
    ok(r, "flush", domain="example.org")

    def deferred():
        (rec,) = ok(r, "queue")
        return rec if rec["attempts"] == 1 else None

    rec = wait_until(deferred, 15, what="a deferred attempt")
    x = rec["recipients"][0]
    # a hold domain: the reason and the count, and no retry time (issue 9)
    assert "451" in x["delay_reason"] and x["next_attempt"] is None and x["waiting"] == "ETRN"
    assert rec["next_attempt"] is None and rec["waiting"] == "ETRN"
    assert ok(r, "requeue", id=q) == [{"requeued": 1}]
    (rec,) = ok(r, "queue")
    assert rec["attempts"] == 0 and rec["recipients"][0]["attempts"] == 0
    assert rec["recipients"][0]["delay_reason"] == ""
    assert ok(r, "requeue") == [{"requeued": 1}]  # bare: all of them
    fails(r, "notfound", "requeue", id="0000000000000Z")


def test_bounce_returns_the_message_to_its_sender(denv):
    back = denv.sink("sender-mta")
    site = denv.sink("site")
    domains = {"example.org": {"mode": "hold", "route": "127.0.0.1:%d" % site.port},
               "sender.test": {"mode": "retry", "route": "127.0.0.1:%d" % back.port}}
    r = denv.relayd(domains=domains, connect_timeout="2s", min_backoff="1s", max_backoff="2s")
    with Client(r) as c:
        q = sent(c, SENDER, ["a@example.org", "b@example.org"], "return-me")
        keep = sent(c, SENDER, ["c@example.org"], "keep-me")
        null = c.send("", ["d@example.org"], message("from-null"))
    assert ok(r, "bounce", id=[q, null]) == [{"bounced": 2}]
    wait_until(lambda: r.queue.message(q) is None and r.queue.message(null) is None, 10,
               what="the bounced messages to leave the queue")
    (t,) = back.wait_for(1, 20, "the DSN at the sender's MTA")
    assert t.mail_from == "" and t.rcpt_addrs == [SENDER]
    d = DSN(t)
    for a in ("a@example.org", "b@example.org"):
        rr = d.recipient(a)
        assert rr["Action"].strip() == "failed" and rr["Status"].strip() == "5.0.0", rr.items()
        assert "returned by the operator" in re.sub(r"\s+", " ", rr.get("Diagnostic-Code", ""))
    assert b"Subject: return-me" in t.data
    # the null sender's message was returned to nobody: its outcome is logged,
    # nothing new waits in the queue, and the sender's MTA got the one DSN
    r.wait_log(r"%s: to=<d@example\.org>, relay=none, delay=[\d.]+, delays=[\d./]+, dsn=5\.0\.0, status=bounced " % null)
    wait_until(lambda: ids(ok(r, "queue")) == [keep], 20, what="only keep-me left in the queue")
    assert back.count() == 1, "a DSN for the null sender's message: %r" % back.received()
    assert site.count() == 0  # nothing was delivered to the site
    r.wait_log(r"%s: to=<a@example\.org>, relay=none, delay=[\d.]+, delays=[\d./]+, dsn=5\.0\.0, status=bounced "
               r"\(returned by the operator\)" % q)
    fails(r, "notfound", "bounce", id=q)
    fails(r, "usage", "bounce")


# --- stats, reload ----------------------------------------------------------------------------

def test_stats(relayd):
    q1, q2, q3 = known_queue(relayd)
    recs = ok(relayd, "stats")
    total = recs[-1]
    assert total["domain"] == ""
    assert total["queue_messages"] == 3
    assert total["queue_bytes"] == sum(relayd.queue.message(q)["size"] for q in (q1, q2, q3))
    assert isinstance(total["connections"], int) and 0 <= total["uptime"] < 600
    counters = {"delivered", "deferred", "bounced", "etrn", "received", "quota_refused"}
    for x in recs[:-1]:
        assert set(x) == {"domain"} | counters and x["domain"], x
    assert [x["domain"] for x in recs[:-1]] == sorted(x["domain"] for x in recs[:-1])
    fails(relayd, "usage", "stats", domain="example.org")


def test_reload(relayd):
    off = relayd.log_size()
    assert ok(relayd, "reload") == [{"reloaded": True}]
    relayd.wait_log(r"configuration reloaded from", since=off)
    relayd.domains["new.test"] = {"mode": "hold"}
    relayd.write_config()
    assert ok(relayd, "reload") == [{"reloaded": True}]
    wait_until(lambda: any(x["domain"] == "new.test" for x in ok(relayd, "domains")), 5,
               what="the reloaded domain in `domains`")


# --- the protocol ----------------------------------------------------------------------------

def test_protocol_errors(relayd):
    path = ctl_path(relayd)

    def final(data, eof=False):
        return parse_response(raw_request(path, data, eof=eof))[1]

    assert final(b"bogus\n")["code"] == "usage"
    assert final(b"\n")["code"] == "usage"
    assert final(b"queue domain\n")["code"] == "usage"  # no '='
    assert final(b"queue domain=%zz\n")["code"] == "usage"
    assert final(b"queue domain=a%00b\n")["code"] == "usage"
    assert final(b"queue domain=a domain=b\n")["code"] == "usage"
    assert final(b"queue colour=red\n")["code"] == "usage"
    assert final(b"summary\r\n") == {"ok": True}  # CRLF is fine
    assert final(b"summary", eof=True) == {"ok": True}  # EOF ends the line too
    # bytes after the request line are read and dropped, not answered
    assert final(b"summary\nqueue\n" + b"junk" * 100000) == {"ok": True}
    # keys and values are percent-decoded, the command too
    assert final(b"%71ueue li%6dit=1\n") == {"ok": True}
    # 64 KiB is the most a request may have
    assert final(b"queue sender=" + b"x" * (64 * 1024 - 13) + b"\n") == {"ok": True}
    assert final(b"queue sender=" + b"x" * (64 * 1024) + b"\n")["code"] == "usage"
    assert relayd.alive()


def test_a_silent_client_is_dropped(relayd_factory):
    relayd = relayd_factory(log_level="debug")
    t0 = time.monotonic()  # before the connection: what follows can only be longer
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(60)
        s.connect(ctl_path(relayd))
        s.sendall(b"que")  # never finished
        assert s.recv(100) == b""
        # by relayd's request timeout (10 s), not at once; libuv arms its
        # timer from the loop's cached time, which may be a few ms older
        # than the accept, so allow a tenth of a second
        assert time.monotonic() - t0 >= 9.9
    relayd.wait_log(r"control #\d+: timed out reading")
    assert ok(relayd, "summary") == []


def test_connections_are_bounded(relayd):
    idle = []
    try:
        for _ in range(32):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(ctl_path(relayd))
            idle.append(s)
        time.sleep(0.3)
        recs, final = ctl(relayd, "summary")
        assert final["ok"] is False and final["code"] == "internal" and "too many" in final["error"]
    finally:
        for s in idle:
            s.close()
    wait_until(lambda: ctl(relayd, "summary")[1] == {"ok": True}, 5, what="a served request again")


# --- the socket: permissions, owner, stale and live sockets ------------------------------------

def test_permissions_group_member_reads_and_flushes_only(public_tmpdir, denv):
    path = os.path.join(public_tmpdir, "ctl.sock")
    r, s = sites(denv, ["example.org"], control_socket=path, control_socket_mode="0660",
                 control_socket_group="nogroup")
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
    assert st.st_uid == 0 and st.st_gid == NOBODY
    with Client(r) as c:
        q = sent(c, SENDER, ["a@example.org"], "ops")

    recs, final = as_user(path, "queue")
    assert final == {"ok": True} and ids(recs) == [q]
    recs, final = as_user(path, "show id=" + q)
    assert final == {"ok": True} and recs[0]["queue_id"] == q
    for cmd in ("summary", "domains", "stats"):
        assert as_user(path, cmd)[1] == {"ok": True}, cmd
    for cmd in ("delete id=" + q, "hold id=" + q, "hold domain=example.org", "release all=1",
                "bounce id=" + q, "requeue", "reload", "delete all=1"):
        recs, final = as_user(path, cmd)
        assert recs == [] and final["ok"] is False and final["code"] == "denied", (cmd, final)
    assert r.queue.message(q)["recipients"][0]["state"] == 0, "a denied hold changed the queue"
    r.wait_log(r"control: delete refused to uid %d" % NOBODY)
    # flush is an operator's: it delivers
    recs, final = as_user(path, "flush domain=example.org")
    assert final == {"ok": True} and recs == [{"domain": "example.org", "messages": 1}]
    s["example.org"].wait_for(1, 15)
    # root may do everything on the same socket
    assert ok(r, "hold", domain="example.org") == [{"held": 0}]

    # not in the group: the socket's mode keeps it out altogether
    out = as_user(path, "queue", uid=NOBODY, gid=4242)
    assert out == {"connect_error": 13}, out  # EACCES


def test_socket_mode_is_applied(public_tmpdir, relayd_factory):
    path = os.path.join(public_tmpdir, "private.sock")
    r = relayd_factory(control_socket=path, control_socket_mode="0600")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.stat(path).st_gid == 0
    assert as_user(path, "queue") == {"connect_error": 13}
    assert ok(r, "queue") == []


def test_relayd_user_may_do_everything(public_tmpdir, relayd_factory):
    """Run as nobody, relayd owns its socket; nobody is then relayd itself."""
    qdir = os.path.join(public_tmpdir, "queue")
    os.makedirs(qdir)
    os.chown(qdir, NOBODY, NOBODY)
    path = os.path.join(public_tmpdir, "ctl.sock")
    r = relayd_factory(workdir=os.path.join(public_tmpdir, "work"), user="nobody",
                       database=os.path.join(qdir, "queue.db"), control_socket=path)
    st = os.stat(path)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (NOBODY, NOBODY, 0o660)
    with Client(r) as c:
        q = sent(c, SENDER, ["a@example.org"], "mine")
    recs, final = as_user(path, "hold id=" + q)
    assert final == {"ok": True} and recs == [{"held": 1}]
    recs, final = as_user(path, "delete id=" + q)
    assert final == {"ok": True} and recs == [{"deleted": 1}]


def test_stale_socket_is_replaced_and_a_live_one_refused(relayd_factory, tmp_path):
    a = relayd_factory()
    path = ctl_path(a)
    # a second relayd on the same socket does not start
    b = Relayd(str(tmp_path / "second"), control_socket=path)
    with pytest.raises(AssertionError):
        b.start()
    assert re.search(r"another relayd is answering on " + re.escape(path), b.log_text()), b.log_tail()
    assert ok(a, "summary") == []  # the first one still answers
    # killed, a relayd leaves its socket behind; the next start replaces it
    a.kill9()
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    a.start()
    a.wait_log(r"control: removed the stale socket", since=a.log_start)
    assert ok(a, "summary") == []
    # a clean stop removes it
    assert a.stop() == 0
    assert not os.path.exists(path)


def test_not_a_socket_is_left_alone(relayd_factory, tmp_path):
    path = str(tmp_path / "notasocket")
    with open(path, "w") as f:
        f.write("mine\n")
    r = Relayd(str(tmp_path / "r"), control_socket=path)
    with pytest.raises(AssertionError):
        r.start()
    assert "exists and is not a socket" in r.log_text()
    with open(path) as f:
        assert f.read() == "mine\n"


def listening_unix_paths(pid):
    """Paths of the unix sockets process pid listens on (/proc/net/unix flag
    __SO_ACCEPTCON on a socket among its descriptors)."""
    inodes = set()
    fd_dir = "/proc/%d/fd" % pid
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    paths = []
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            fields = line.split()
            if len(fields) >= 8 and fields[6] in inodes and int(fields[3], 16) & 0x10000:
                paths.append(fields[7])
    return paths


def test_empty_control_socket_means_none(relayd_factory):
    # the default does listen, and listening_unix_paths sees it
    d = relayd_factory()
    assert listening_unix_paths(d.pid) == [d.keys["control_socket"]]
    r = relayd_factory(control_socket="")
    assert "control: listening" not in r.log_text()
    assert listening_unix_paths(r.pid) == []
