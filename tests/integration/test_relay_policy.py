# test_relay_policy: relayd must never be an open relay. Every classic trick is
# refused with 5xx at RCPT (and nothing is queued); the relay domains are
# accepted case-insensitively, with a trailing dot, and subdomains only where
# `subdomains = yes`.

import re

import pytest

from relayd_fixture import make_message, queue_id_of

REFUSED = [
    ("percent_hack", "u%other@example.org"),
    ("percent_hack_evil", "u%evil.test@example.org"),
    ("bang_path", "other!u@example.org"),
    ("bang_path_upper", "EVIL.TEST!u@EXAMPLE.ORG"),
    ("source_route", "@example.org:u@evil.test"),
    ("source_route_list", "@example.org,@sub.test:u@evil.test"),
    ("double_at", "u@evil.test@example.org"),
    ("quoted_at", '"u@evil.test"@example.org'),
    ("quoted_percent", '"u%evil.test"@example.org'),
    ("ipv4_literal", "u@[127.0.0.1]"),
    ("ipv6_literal", "u@[IPv6:::1]"),
    ("foreign_domain", "u@evil.test"),
    ("foreign_domain_dot", "u@evil.test."),
    ("suffix_domain", "u@example.org.evil.test"),
    ("lookalike_domain", "u@badexample.org"),
    ("subdomain_not_allowed", "u@x.example.org"),
    ("parent_of_relay_domain", "u@org"),
    ("sub_test_lookalike", "u@notsub.test"),
    ("empty_domain", "u@"),
    ("no_domain", "postmaster-at-nowhere"),
]

ACCEPTED = [
    ("plain", "u@example.org", "example.org"),
    ("upper_case", "U@EXAMPLE.ORG", "example.org"),
    ("mixed_case", "u@Example.Org", "example.org"),
    ("trailing_dot", "u@example.org.", "example.org"),
    ("subdomain", "u@x.sub.test", None),
    ("deep_subdomain", "u@a.b.sub.test", None),
    ("subdomains_base", "u@sub.test", "sub.test"),
    ("quoted_local_part", '"john smith"@example.org', "example.org"),
    ("plus_local", "u+tag@example.org", "example.org"),
]


@pytest.mark.parametrize("name,addr", REFUSED, ids=[r[0] for r in REFUSED])
def test_relay_trick_refused(module_relayd, name, addr):
    r = module_relayd
    before = r.queue.count()
    c = r.raw()
    c.ehlo()
    c.expect("MAIL FROM:<a@b.test>", 250)
    rep = c.cmd("RCPT TO:<%s>" % addr)
    assert 500 <= rep.code < 600, "relay trick %r accepted: %r" % (addr, rep)
    assert re.match(r"^5\d\d 5\.\d+\.\d+ ", rep.lines[-1]), rep
    if rep.code == 550:
        assert rep.line.startswith("550 5.7.1 ") and "Relay access denied" in rep.line, rep
    # no recipient, so no message
    rep = c.cmd("DATA")
    assert rep.code == 503, rep
    c.expect("QUIT", 221)
    assert r.queue.count() == before


def test_refusal_is_logged(module_relayd):
    r = module_relayd
    c = r.raw()
    c.ehlo()
    c.expect("MAIL FROM:<a@b.test>", 250)
    rep = c.expect("RCPT TO:<u@evil.test>", 550)
    assert rep.line.startswith("550 5.7.1 <u@evil.test>: Relay access denied"), rep
    r.wait_log(r"NOQUEUE: reject: RCPT from \[127\.0\.0\.1\]:\d+: 550 5\.7\.1 <u@evil\.test>: "
               r"Relay access denied.*; from=<a@b\.test> to=<u@evil\.test> proto=ESMTP helo=<client\.test>")


def test_mixed_good_and_bad_recipients(module_relayd):
    """A refused recipient does not spoil the transaction, and is not stored."""
    r = module_relayd
    c = r.raw()
    c.ehlo()
    c.expect("MAIL FROM:<a@b.test>", 250)
    c.expect("RCPT TO:<u@evil.test>", 550)
    c.expect("RCPT TO:<u@example.org>", 250)
    c.expect("RCPT TO:<u%evil.test@example.org>", 550)
    c.expect("DATA", 354)
    c.send(make_message() + b".\r\n")
    m = r.queue.message(queue_id_of(c.reply()))
    assert [x["address"] for x in m["recipients"]] == ["u@example.org"]


@pytest.mark.parametrize("name,addr,domain", ACCEPTED, ids=[a[0] for a in ACCEPTED])
def test_relay_domain_accepted(module_relayd, name, addr, domain):
    r = module_relayd
    c = r.raw()
    c.ehlo()
    c.expect("MAIL FROM:<a@b.test>", 250)
    rep = c.expect("RCPT TO:<%s>" % addr, 250)
    assert rep.line == "250 2.1.5 Ok", rep
    c.expect("DATA", 354)
    c.send(make_message(subject=name) + b".\r\n")
    m = r.queue.message(queue_id_of(c.reply()))
    (rcpt,) = m["recipients"]
    want = domain or addr.split("@")[1]
    # the domain column is what ETRN looks up: normalised (lower case, no trailing dot)
    assert rcpt["domain"] in (want, "sub.test" if want.endswith(".sub.test") else want), rcpt
    assert rcpt["address"].rstrip(".").lower() == addr.rstrip(".").lower(), rcpt
