# test_deferrals: deferred mail an operator can see and a site cannot
# hammer (issue 9). After a failed attempt every recipient shows its last
# reason, its attempts and its next attempt in `etrnctl queue`, `show` and
# their JSON - or, for a hold domain, that it waits for ETRN (never a
# retry time that no timer acts on) - and the stats count the deferrals
# per domain. A burst of ETRNs (etrnctl etrn --wait polling) gives a site
# that still fails one extra attempt, not one per ETRN. `etrnctl flush` of
# a domain that is neither configured nor has mail exits 66.

import json
import os
import subprocess
import time

from relayd_fixture import Relayd, wait_until
from sink import Client, Sink, message
from test_control import ok
from test_etrnctl import etrnctl_binary

SENDER = "sender@sender.test"
EX_NOINPUT, EX_TEMPFAIL = 66, 75


def etrnctl(r, *args, timeout=60):
    env = dict(os.environ, ETRNCTL_SOCKET=r.keys["control_socket"])
    return subprocess.run([etrnctl_binary()] + list(args), capture_output=True, text=True, env=env,
                          timeout=timeout)


def queue_json(r):
    p = etrnctl(r, "queue", "--json")
    assert p.returncode == 0, p
    return {m["queue_id"]: m for m in map(json.loads, p.stdout.splitlines())}


def refusing_site():
    site = Sink(name="down")
    site.behaviour.refuse = (421, "4.3.2 site.test not accepting mail now")
    site.start()
    return site


def test_queue_show_and_stats_say_why_and_what_next(tmp_path):
    # one site each: two domains on one next hop share its state
    site, site2 = refusing_site(), refusing_site()
    doms = {"hold.test": {"mode": "hold", "route": "127.0.0.1:%d" % site.port},
            "retry.test": {"mode": "retry", "route": "127.0.0.1:%d" % site2.port}}
    r = Relayd(str(tmp_path / "r"), domains=doms, min_backoff="10m")
    r.start()
    try:
        with Client(r) as c:
            qh = c.send(SENDER, ["a@hold.test", "b@hold.test"], message("held"))
            qr = c.send(SENDER, ["c@retry.test"], message("retried"))
        # never tried: the hold domain's mail waits for ETRN, with no time
        m = queue_json(r)[qh]
        assert m["waiting"] == "ETRN" and m["next_attempt"] is None, m
        assert all(x["waiting"] == "ETRN" and x["next_attempt"] is None and x["attempts"] == 0
                   for x in m["recipients"]), m
        ok(r, "flush", domain="hold.test")  # the operator's ETRN: one attempt, refused

        def tried():
            q = queue_json(r)
            return all(x["attempts"] >= 1 for mid in (qh, qr) for x in q[mid]["recipients"]) and q

        q = wait_until(tried, 20, what="an attempt for every recipient")
        now = int(time.time())
        for x in q[qh]["recipients"]:
            assert x["attempts"] == 1 and "421" in x["delay_reason"], x
            assert x["waiting"] == "ETRN" and x["next_attempt"] is None, x
        assert q[qh]["waiting"] == "ETRN" and q[qh]["next_attempt"] is None, q[qh]
        (y,) = q[qr]["recipients"]
        assert y["attempts"] == 1 and "421" in y["delay_reason"], y
        assert y["waiting"] is None and y["next_attempt"] > now, y
        assert q[qr]["next_attempt"] == y["next_attempt"] and q[qr]["waiting"] is None, q[qr]

        # the text listing and show say the same
        p = etrnctl(r, "queue")
        assert p.returncode == 0, p
        assert p.stdout.count("attempts=1, waiting for ETRN") == 2, p.stdout
        assert p.stdout.count("attempts=1, next in ") == 1, p.stdout
        assert p.stdout.count("421 4.3.2 site.test not accepting mail now") >= 3, p.stdout
        p = etrnctl(r, "show", qh)
        assert p.returncode == 0, p
        assert "recipient: <a@hold.test> attempts=1 waiting for ETRN reason=" in p.stdout, p.stdout
        p = etrnctl(r, "show", qr)
        assert "recipient: <c@retry.test> attempts=1 next=in " in p.stdout, p.stdout

        # stats: one deferral per recipient tried, per domain
        by = {x["domain"]: x for x in ok(r, "stats")}
        assert by["hold.test"]["deferred"] == 2 and by["retry.test"]["deferred"] >= 1, by
    finally:
        r.stop()
        site.stop()
        site2.stop()


def test_etrn_burst_gives_a_failing_site_one_extra_attempt(tmp_path):
    site = refusing_site()
    r = Relayd(str(tmp_path / "r"), domains={"example.org": {"mode": "hold",
                                                             "route": "127.0.0.1:%d" % site.port}},
               etrn_rate="1000/1m", min_backoff="5m")
    r.start()
    try:
        with Client(r) as c:
            c.send(SENDER, ["u@example.org"], message("burst"))
        # etrnctl etrn --wait asks again every round until its timeout
        p = etrnctl(r, "etrn", "-H", "127.0.0.1:%d" % r.port, "--wait=6", "--json", "example.org",
                    timeout=60)
        assert p.returncode == EX_TEMPFAIL, p
        etrns = [x for x in map(json.loads, p.stdout.splitlines()) if x.get("code") == 253]
        assert len(etrns) >= 3, p.stdout  # the burst relayd answered
        # once no run is going, every ETRN's effect is in: two attempts
        # (the first ETRN's, and one extra that cleared the backoff)
        wait_until(lambda: not [d for d in ok(r, "domains") if d["domain"] == "example.org"][0]["flushing"],
                   20, what="the last run to end")
        assert site.conns == 2, "%d attempts for %d ETRNs" % (site.conns, len(etrns))
    finally:
        r.stop()
        site.stop()


def test_flush_of_an_unknown_domain_exits_66(tmp_path):
    r = Relayd(str(tmp_path / "r"))
    r.start()
    try:
        p = etrnctl(r, "flush", "nosuch.example")
        assert p.returncode == EX_NOINPUT, p
        assert "nosuch.example is not a relay domain and has nothing queued" in p.stderr, p
        # a relay domain with nothing queued is no error
        p = etrnctl(r, "flush", "example.org")
        assert p.returncode == 0 and p.stdout == "nothing to flush\n", p
    finally:
        r.stop()
