# test_relay_policy: relayd must never be an open relay. Every classic trick is
# refused with 5xx at RCPT (and nothing is queued); the relay domains are
# accepted case-insensitively, with a trailing dot, and subdomains only where
# `subdomains = yes`.

import pytest

from relayd_fixture import make_message, queue_id_of

# What relayd(8) RELAY POLICY promises for each: "550 5.7.1 <address>: Relay
# access denied (reason)", or 501 5.1.3 for what is no valid path at all. A
# fourth field is the address the reply names when it is not the path as sent
# (a source route's mailbox; a quoted local part unquoted).
NRD = "not a relay domain"
REFUSED = [
    ("percent_hack", "u%other@example.org", "percent hack"),
    ("percent_hack_evil", "u%evil.test@example.org", "percent hack"),
    ("bang_path", "other!u@example.org", "bang path"),
    ("bang_path_upper", "EVIL.TEST!u@EXAMPLE.ORG", "bang path"),
    ("source_route", "@example.org:u@evil.test", "source route", "u@evil.test"),
    ("source_route_list", "@example.org,@sub.test:u@evil.test", "source route", "u@evil.test"),
    ("double_at", "u@evil.test@example.org", None),
    ("quoted_at", '"u@evil.test"@example.org', "quoted local part contains @"),
    ("quoted_percent", '"u%evil.test"@example.org', "percent hack", "u%evil.test@example.org"),
    ("ipv4_literal", "u@[127.0.0.1]", "address literal"),
    ("ipv6_literal", "u@[IPv6:::1]", "address literal"),
    ("foreign_domain", "u@evil.test", NRD),
    ("foreign_domain_dot", "u@evil.test.", NRD),
    ("suffix_domain", "u@example.org.evil.test", NRD),
    ("lookalike_domain", "u@badexample.org", NRD),
    ("subdomain_not_allowed", "u@x.example.org", NRD),
    ("parent_of_relay_domain", "u@org", NRD),
    ("sub_test_lookalike", "u@notsub.test", NRD),
    ("empty_domain", "u@", None),
    ("no_domain", "postmaster-at-nowhere", None),
    ("postmaster_no_domain", "postmaster", "no domain"),
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


@pytest.mark.parametrize("name,addr,reason,shown", [r + (None,) * (4 - len(r)) for r in REFUSED],
                         ids=[r[0] for r in REFUSED])
def test_relay_trick_refused(module_relayd, name, addr, reason, shown):
    r = module_relayd
    before = r.queue.count()
    c = r.raw()
    c.ehlo()
    c.expect("MAIL FROM:<a@b.test>", 250)
    rep = c.cmd("RCPT TO:<%s>" % addr)
    if reason is None:
        assert rep.line == "501 5.1.3 Bad recipient address syntax", rep
    else:
        assert rep.line == "550 5.7.1 <%s>: Relay access denied (%s)" % (shown or addr, reason), rep
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
    r.wait_log(r"NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.1\]:\d+: 550 5\.7\.1 <u@evil\.test>: "
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
