# test_site_connections: relayd.conf(5) max_site_connections, "how many
# delivery connections may be open at once to one site": the global value for
# a domain that does not set its own, the domain's own otherwise. The sink
# holds every message's final reply until that many connections are open
# (bounded), so the limit is reached if relayd uses it, and the sink's count
# of connections open at once shows it is never passed.

from sink import Client, etrn, message


def hold_until_open(site, n):
    """A sink data behaviour: answer the dot once n connections have been open
    at once (or after a generous bound, so a relayd that opens fewer still ends)."""

    def answer(t):
        with site.cond:
            site.cond.wait_for(lambda: site.max_open >= n, timeout=15)
        return None  # 250

    return answer


def test_max_site_connections(denv):
    two = denv.sink("two")
    three = denv.sink("three")
    two.behaviour.data = hold_until_open(two, 2)
    three.behaviour.data = hold_until_open(three, 3)
    r = denv.relayd(max_site_connections=2,
                    domains={"two.test": {"mode": "hold", "route": "127.0.0.1:%d" % two.port},
                             "three.test": {"mode": "hold", "route": "127.0.0.1:%d" % three.port,
                                            "max_site_connections": 3}})
    with Client(r) as c:
        for i in range(8):
            for d in ("two.test", "three.test"):
                c.send("s@sender.test", ["u%d@%s" % (i, d)], message("%s-%d" % (d, i), to="u%d@%s" % (i, d)))
    assert etrn(r, "two.test")[0] == 253
    assert etrn(r, "three.test")[0] == 253
    assert len(two.wait_for(8, 60, "two.test's messages")) == 8
    assert len(three.wait_for(8, 60, "three.test's messages")) == 8
    assert two.max_open == 2, two.max_open
    assert three.max_open == 3, three.max_open
