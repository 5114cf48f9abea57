# test_schedule: when relayd tries a site without being asked, and how an ETRN
# changes that (relayd.conf(5) min_backoff, max_backoff, probe_interval;
# relayd(8) ETRN: "An ETRN clears the site's backoff"). Each waits for the
# log line or the sink record that shows the event, with a generous bound.

from sink import Client, etrn, message


def test_etrn_clears_the_backoff(denv):
    site = denv.sink("site", start=False)  # down: every try fails at connect
    r = denv.relayd(domains={"retry.test": {"mode": "retry", "route": "127.0.0.1:%d" % site.port}},
                    min_backoff="1s", max_backoff="1h", connect_timeout="2s")
    with Client(r) as c:
        c.send("s@sender.test", ["u@retry.test"], message("m1", to="u@retry.test"))
    # the backoff doubles per failed try: 1 s, 2 s, 4 s ...
    r.wait_log(r"retry\.test: delivery deferred \(.*\); next try in 4s", timeout=60)
    off = r.log_size()
    assert etrn(r, "retry.test")[0] == 253
    # the ETRN's own try (at once, not in 4 s) fails too, and the backoff
    # starts again from min_backoff instead of doubling to 8 s
    m = r.wait_log(r"retry\.test: delivery deferred \(.*\); next try in (\d+)s", timeout=60, since=off)
    assert m.group(1) == "1", m.group(0)
    # once the site is up the next try delivers
    site.start()
    (t,) = site.wait_for(1, 60, "the message after the site came up")
    assert t.rcpt_addrs == ["u@retry.test"]


def test_probe_interval_delivers_a_hold_domain_unasked(denv):
    site = denv.sink("site")
    r = denv.relayd(domains={"probed.test": {"mode": "hold", "route": "127.0.0.1:%d" % site.port,
                                             "probe_interval": "1s"},
                             "held.test": {"mode": "hold", "route": "127.0.0.1:%d" % site.port}})
    with Client(r) as c:
        q_held = c.send("s@sender.test", ["u@held.test"], message("held", to="u@held.test"))
        c.send("s@sender.test", ["u@probed.test"], message("probed", to="u@probed.test"))
    # nobody sends ETRN: the probe delivers it
    (t,) = site.wait_for(1, 60, "the probed domain's message")
    assert t.rcpt_addrs == ["u@probed.test"]
    r.wait_log(r": to=<u@probed\.test>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, .*status=sent " % site.port,
               timeout=30)
    # the hold domain without probe_interval still waits for its ETRN (the
    # probed domain's delivery, queued after it, is the marker that the
    # scheduler has been round)
    assert r.queue.message(q_held) is not None
    assert site.count() == 1
    assert etrn(r, "held.test")[0] == 253
    assert [x.rcpt_addrs for x in site.wait_for(2, 60)] == [["u@probed.test"], ["u@held.test"]]
