# test_delivery_tls: each domain's tls policy holds on its own, against the
# recording sink (sink.py) with STARTTLS. Domains that share a next hop
# never send an encrypt domain's mail over a connection another domain
# opened in clear (the downgrade of issue 7); tls = may goes on in clear
# after a refused STARTTLS and retries in clear after a failed handshake
# (RFC 7435 §3, as Postfix does); encrypt never sends in clear; verify
# delivers to a certificate tls_ca_file trusts and to no other.

import re
import threading

import pytest

from relayd_fixture import wait_until
from sink import Client, etrn, make_cert, message, subject_of


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("sinkcerts")
    return {"site": make_cert(str(d), "site"), "other": make_cert(str(d), "other")}


def route(sink):
    return "127.0.0.1:%d" % sink.port


def tls_sink(denv, certs, name="site"):
    s = denv.sink(name)
    s.behaviour.tls = certs["site"]
    return s


def mail_commands(sink):
    with sink.lock:
        return [c for c in sink.commands if c.upper().startswith("MAIL")]


@pytest.mark.time_limit(60)
def test_shared_next_hop_never_downgrades_an_encrypt_domain(denv, certs):
    """The issue's reproduction: one stranger's message for a tls = none
    domain and two ETRNs. The stranger's connection (opened in clear) is
    still busy when the encrypt domain's run joins the shared next hop;
    before the fix its mail went out on that clear connection."""
    site = tls_sink(denv, certs)
    first_dot = threading.Event()

    def slow_first(t):
        # hold the clear connection open while the second ETRN comes in
        if not first_dot.is_set():
            first_dot.set()
            wait_until(lambda: secure_etrn_done.is_set(), 20, what="second ETRN")
        return None

    secure_etrn_done = threading.Event()
    site.behaviour.data = slow_first
    r = denv.relayd(domains={
        "plain.test": {"mode": "hold", "route": route(site), "tls": "none"},
        "secure.test": {"mode": "hold", "route": route(site), "tls": "encrypt"},
    })
    with Client(r) as c:
        c.send("stranger@elsewhere.test", ["u@plain.test"], message("stranger"))
        for i in range(2):
            c.send("s@sender.test", ["u%d@secure.test" % i], message("secure%d" % i))
    assert etrn(r, "plain.test")[0] == 253
    wait_until(first_dot.is_set, 20, what="the stranger's message at the site")
    assert etrn(r, "secure.test")[0] == 253
    secure_etrn_done.set()
    got = site.wait_for(3, 30, "all three messages")
    by_subject = {subject_of(t.data): t for t in got}
    assert sorted(by_subject) == ["secure0", "secure1", "stranger"]
    assert by_subject["stranger"].tls is None, "tls = none sent over TLS"
    for s in ("secure0", "secure1"):
        assert by_subject[s].tls is not None, "%s (tls = encrypt) was sent in clear" % s
    wait_until(lambda: r.queue.count() == 0, 10, what="the queue to empty")


@pytest.mark.time_limit(60)
def test_may_goes_on_in_clear_after_starttls_454(denv, certs):
    site = tls_sink(denv, certs)
    site.behaviour.starttls = (454, "4.7.0 TLS not available due to local problem")
    r = denv.relayd(domains={"example.org": {"mode": "hold", "route": route(site), "tls": "may"}})
    with Client(r) as c:
        c.send("s@sender.test", ["u@example.org"], message("may454"))
    assert etrn(r, "example.org")[0] == 253
    (t,) = site.wait_for(1, 20, "the may message after a refused STARTTLS")
    assert subject_of(t.data) == "may454" and t.tls is None
    assert site.conns == 1, "RFC 3207: the same connection goes on after the refusal"
    r.wait_log(r"warning: \[127\.0\.0\.1\]:%d: .* refused STARTTLS \(454 4\.7\.0 TLS not available "
               r"due to local problem\); delivering in clear \(tls = may\)" % site.port)
    wait_until(lambda: r.queue.count() == 0, 10, what="the queue to empty")


@pytest.mark.time_limit(60)
def test_may_retries_in_clear_after_a_broken_handshake(denv, certs):
    site = tls_sink(denv, certs)
    site.behaviour.starttls = "break"
    r = denv.relayd(domains={"example.org": {"mode": "hold", "route": route(site), "tls": "may"}})
    with Client(r) as c:
        c.send("s@sender.test", ["u@example.org"], message("maybroken"))
    assert etrn(r, "example.org")[0] == 253
    (t,) = site.wait_for(1, 20, "the may message after a broken handshake")
    assert subject_of(t.data) == "maybroken" and t.tls is None
    assert t.conn_no == 2, "delivered on connection %d, not on the retry in clear" % t.conn_no
    assert "starttls broken" in site.events
    with site.lock:
        assert [c for c in site.commands if c.upper() == "STARTTLS"] == ["STARTTLS"], site.commands
    r.wait_log(r"warning: \[127\.0\.0\.1\]:%d: .*TLS handshake with .* failed.*; retrying in clear "
               r"\(tls = may\)" % site.port)
    wait_until(lambda: r.queue.count() == 0, 10, what="the queue to empty")


@pytest.mark.time_limit(60)
def test_encrypt_defers_on_starttls_454(denv, certs):
    site = tls_sink(denv, certs)
    site.behaviour.starttls = (454, "4.7.0 TLS not available")
    r = denv.relayd(domains={"example.org": {"mode": "hold", "route": route(site), "tls": "encrypt"}})
    with Client(r) as c:
        qid = c.send("s@sender.test", ["u@example.org"], message("enc454"))
    assert etrn(r, "example.org")[0] == 253
    # the positive marker: relayd got the refusal and gave up on this run
    r.wait_log(r"warning: example\.org: TLS required \(tls = encrypt\) but not available from "
               r"\[127\.0\.0\.1\]:%d: .*454 4\.7\.0 TLS not available" % site.port, timeout=20)
    r.wait_log(r"example\.org: delivery deferred", timeout=10)
    assert site.count() == 0
    assert mail_commands(site) == [], "a MAIL command went out in clear"
    m = r.queue.message(qid)
    assert m is not None and len(m["recipients"]) == 1


@pytest.mark.time_limit(60)
def test_verify_delivers_to_a_trusted_certificate(denv, certs):
    site = tls_sink(denv, certs)
    r = denv.relayd(domains={"example.org": {"mode": "hold", "route": route(site), "tls": "verify"}},
                    tls_ca_file=certs["site"][0])
    with Client(r) as c:
        c.send("s@sender.test", ["u@example.org"], message("verified"))
    assert etrn(r, "example.org")[0] == 253
    (t,) = site.wait_for(1, 20, "the verify message")
    assert subject_of(t.data) == "verified" and t.tls is not None
    wait_until(lambda: r.queue.count() == 0, 10, what="the queue to empty")


@pytest.mark.time_limit(60)
def test_verify_refuses_an_untrusted_certificate(denv, certs):
    site = tls_sink(denv, certs)
    r = denv.relayd(domains={"example.org": {"mode": "hold", "route": route(site), "tls": "verify"}},
                    tls_ca_file=certs["other"][0])
    with Client(r) as c:
        qid = c.send("s@sender.test", ["u@example.org"], message("untrusted"))
    assert etrn(r, "example.org")[0] == 253
    r.wait_log(r"warning: example\.org: TLS required \(tls = verify\) but not available from "
               r"\[127\.0\.0\.1\]:%d: .*not trusted" % site.port, timeout=20)
    assert site.count() == 0
    assert mail_commands(site) == []
    assert r.queue.message(qid) is not None


@pytest.mark.time_limit(60)
def test_shared_next_hop_may_delivers_while_encrypt_waits(denv, certs):
    """Either order: the encrypt domain's failure to get TLS defers only its
    own mail; the may domain on the same next hop still delivers (in clear)."""
    site = tls_sink(denv, certs)
    site.behaviour.starttls = (454, "4.7.0 TLS not available")
    r = denv.relayd(domains={
        "enc.test": {"mode": "hold", "route": route(site), "tls": "encrypt"},
        "may.test": {"mode": "hold", "route": route(site), "tls": "may"},
    })
    with Client(r) as c:
        enc = c.send("s@sender.test", ["u@enc.test"], message("enc"))
        c.send("s@sender.test", ["u@may.test"], message("may"))
    assert etrn(r, "enc.test")[0] == 253
    assert etrn(r, "may.test")[0] == 253
    (t,) = site.wait_for(1, 20, "the may domain's message")
    assert subject_of(t.data) == "may" and t.tls is None
    r.wait_log(r"warning: enc\.test: TLS required \(tls = encrypt\) but not available", timeout=20)
    wait_until(lambda: r.queue.count() == 1, 10, what="only the encrypt message left")
    assert r.queue.message(enc) is not None
    assert len(mail_commands(site)) == 1


@pytest.mark.time_limit(60)
@pytest.mark.parametrize("first, second, expect_second", [
    # a connection that achieved TLS carries a tls = none domain's mail too
    (("secure.test", "encrypt"), ("plain.test", "none"), "tls"),
    # an unverified TLS connection never carries a verify domain's mail: the
    # verify domain opens its own, which this site's certificate fails
    (("enc.test", "encrypt"), ("ver.test", "verify"), "deferred"),
])
def test_shared_next_hop_other_orders(denv, certs, first, second, expect_second):
    site = tls_sink(denv, certs)
    held = threading.Event()
    release = threading.Event()

    def hold_first(t):
        if not held.is_set():
            held.set()
            wait_until(release.is_set, 20, what="the second ETRN")
        return None

    site.behaviour.data = hold_first
    (d1, p1), (d2, p2) = first, second
    r = denv.relayd(domains={d1: {"mode": "hold", "route": route(site), "tls": p1},
                             d2: {"mode": "hold", "route": route(site), "tls": p2}},
                    tls_ca_file=certs["other"][0])  # the site's certificate is not trusted
    with Client(r) as c:
        c.send("s@sender.test", ["u@%s" % d1], message("first"))
        q2 = c.send("s@sender.test", ["u@%s" % d2], message("second"))
    assert etrn(r, d1)[0] == 253
    wait_until(held.is_set, 20, what="the first message at the site")
    assert etrn(r, d2)[0] == 253
    if expect_second == "deferred":
        r.wait_log(r"warning: %s: TLS required \(tls = verify\) but not available" % re.escape(d2), timeout=20)
    release.set()
    if expect_second == "tls":
        got = site.wait_for(2, 20, "both messages")
        assert all(t.tls is not None for t in got), [(subject_of(t.data), t.tls) for t in got]
        assert len({t.conn_no for t in got}) == 1, "the TLS connection was not reused"
    else:
        (t,) = site.wait_for(1, 20, "the encrypt domain's message")
        assert subject_of(t.data) == "first" and t.tls is not None
        wait_until(lambda: r.queue.count() == 1, 10, what="only the verify message left")
        assert r.queue.message(q2) is not None
        assert site.count() == 1


@pytest.mark.time_limit(60)
def test_reload_reads_tls_ca_file_again(denv, certs):
    """tls_ca_file takes effect on SIGHUP: the verify domain's mail, refused
    under an untrusting CA file, goes out once the file trusts the site."""
    site = tls_sink(denv, certs)
    r = denv.relayd(domains={"example.org": {"mode": "hold", "route": route(site), "tls": "verify"}},
                    tls_ca_file=certs["other"][0])
    with Client(r) as c:
        qid = c.send("s@sender.test", ["u@example.org"], message("after-reload"))
    assert etrn(r, "example.org")[0] == 253
    r.wait_log(r"warning: example\.org: TLS required \(tls = verify\) but not available", timeout=20)
    assert site.count() == 0
    r.keys["tls_ca_file"] = certs["site"][0]
    r.write_config()
    off = r.reload()
    r.wait_log(r"configuration reloaded from", timeout=10, since=off)
    assert etrn(r, "example.org")[0] == 253
    (t,) = site.wait_for(1, 20, "the verify message after the reload")
    assert subject_of(t.data) == "after-reload" and t.tls is not None
    wait_until(lambda: r.queue.message(qid) is None, 10, what="the message to leave the queue")
