# test_routing: where relayd sends a domain's mail (RFC 5321 §5.1, RFC
# 7505), against the real daemon, real SMTP sinks on 127.0.0.x and real DNS
# (dnsmasq, and scripted_dns.py for the answers dnsmasq will not give):
# preference is an order (the backup sees mail only when the better MX
# fails), equal preferences are shuffled per delivery run, an MX host that
# is relayd itself (0.0.0.0, ::, ::ffff:127.0.0.1, its own address) defers
# the mail with 4.4.6 and is never connected to, at most max_mx_addresses
# addresses are tried per run, a new dns_servers applies on SIGHUP, and
# every DNS answer relayd cannot use defers each recipient with a reason
# that names the query, its type and what went wrong.

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time

import pytest

from relayd_fixture import free_port, wait_until
from scripted_dns import ScriptedDNS
from sink import Client, etrn, etrn_until_drained, message, subject_of


def rcpt_rows(r, domain):
    return r.queue.query(
        "SELECT m.queue_id AS q, r.* FROM recipient r JOIN message m ON m.id = r.message_id "
        "WHERE r.domain = ? ORDER BY r.id", (domain,))


def etrnctl(r, *args):
    """etrnctl against r's control socket; returns its standard output."""
    path = os.environ.get("ETRNCTL") or os.path.join(os.environ.get("top_builddir", "."), "etrnctl", "etrnctl")
    env = dict(os.environ, ETRNCTL_SOCKET=r.keys["control_socket"])
    p = subprocess.run([path] + list(args), env=env, capture_output=True, text=True, timeout=20)
    assert p.returncode == 0, (args, p.returncode, p.stderr)
    return p.stdout


@pytest.fixture
def sdns():
    started = []

    def start(script):
        s = ScriptedDNS(script).start()
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


# --- preference is an order ----------------------------------------------------------------


def test_backup_mx_only_when_the_better_one_fails(denv):
    """MX 10 and MX 20 both up: every message goes to the 10, also over the
    extra connections a large flush opens; with the 10 refusing
    connections, the 20 takes the mail."""
    hosts = ["127.0.0.2", "127.0.0.3"]
    port = denv.common_port(hosts)
    best = denv.sink("mx10", host="127.0.0.2", port=port)
    backup = denv.sink("mx20", host="127.0.0.3", port=port)
    d = denv.dns(mx=[("order.test", "mx20.order.test", 20), ("order.test", "mx10.order.test", 10)],
                 hosts={"mx10.order.test": "127.0.0.2", "mx20.order.test": "127.0.0.3"})
    r = denv.relayd(domains={"order.test": {"mode": "hold", "route": "mx"}}, dns_servers=d.server,
                    delivery_port=str(port), connect_timeout="2s", max_site_connections="4")
    n = 150  # more than one fetch batch (100): the second batch opens more connections
    with Client(r) as c:
        for i in range(n):
            c.send("s@sender.test", ["u%d@order.test" % i], message("m%02d" % i))
    assert etrn(r, "order.test")[0] == 253
    best.wait_for(n, 30, "every message at the preference 10 MX")
    etrn_until_drained(r, "order.test", 15)
    assert best.max_open > 1, "one connection only: the test proves nothing about parallel ones"
    assert backup.conns == 0 and backup.count() == 0, \
        "%d messages over %d connections went to the backup MX" % (backup.count(), backup.conns)

    best.stop()
    with Client(r) as c:
        for i in range(3):
            c.send("s@sender.test", ["v%d@order.test" % i], message("b%d" % i))
    assert etrn(r, "order.test")[0] == 253
    got = backup.wait_for(3, 30, "the backup once the best MX refuses connections")
    assert sorted(subject_of(t.data) for t in got) == ["b0", "b1", "b2"]
    etrn_until_drained(r, "order.test", 15)


def test_equal_preferences_shuffled_per_run(denv, sdns):
    """Two MX hosts at 10, answers cached for 60 s: each delivery run picks
    its own order, so over 16 runs both hosts get mail (all to one host by
    chance: 1 in 32768)."""
    hosts = ["127.0.0.2", "127.0.0.3"]
    port = denv.common_port(hosts)
    a = denv.sink("a", host="127.0.0.2", port=port)
    b = denv.sink("b", host="127.0.0.3", port=port)
    dns = sdns({"equal.test": {"MX": [(10, "a.equal.test"), (10, "b.equal.test")]},
                "a.equal.test": {"A": ["127.0.0.2"]}, "b.equal.test": {"A": ["127.0.0.3"]}})
    r = denv.relayd(domains={"equal.test": {"mode": "hold", "route": "mx"}}, dns_servers=dns.server,
                    delivery_port=str(port), connect_timeout="2s")
    runs = 16
    for i in range(runs):
        with Client(r) as c:
            c.send("s@sender.test", ["u@equal.test"], message("run%02d" % i))
        assert etrn(r, "equal.test")[0] == 253
        wait_until(lambda: a.count() + b.count() == i + 1, 15, what="run %d delivered" % i)
        etrn_until_drained(r, "equal.test", 10)
        # the run's connection is gone before the next run starts
        wait_until(lambda: not a.open_conns and not b.open_conns, 10, what="connections closed")
    assert len(dns.asked("equal.test", "MX")) == 1, "the answer was not cached: the test proves less"
    assert a.count() > 0 and b.count() > 0, "all %d runs went to one host: a %d, b %d" % (
        runs, a.count(), b.count())


# --- never to itself -----------------------------------------------------------------------


def test_mx_host_that_is_relayd_itself_defers_4_4_6(denv, sdns):
    """relayd listens on 127.0.0.1:P and delivers to port P: an MX host at
    0.0.0.0, ::, ::ffff:127.0.0.1 or 127.0.0.1 is relayd itself. Each such
    recipient is deferred with 4.4.6 (not bounced, not delivered), and
    etrnctl queue and domains say why."""
    port = free_port()
    cases = {"unspec4.test": {"A": ["0.0.0.0"]}, "unspec6.test": {"AAAA": ["::"]},
             "mapped.test": {"AAAA": ["::ffff:127.0.0.1"]}, "own.test": {"A": ["127.0.0.1"]}}
    script = {}
    for dom, addr in cases.items():
        script[dom] = {"MX": [(10, "mx." + dom)]}
        script["mx." + dom] = addr
    dns = sdns(script)
    back = denv.sink("sender-mta")  # where a bounce would go
    script["sender.test"] = {"MX": [(10, "mx.sender.test")]}
    script["mx.sender.test"] = {"A": ["127.0.0.1"]}
    r = denv.relayd(port=port, domains={d: {"mode": "hold", "route": "mx"} for d in cases},
                    dns_servers=dns.server, delivery_port=str(port), connect_timeout="2s")
    qids = {}
    with Client(r) as c:
        for dom in cases:
            qids[dom] = c.send("s@sender.test", ["u@" + dom], message(dom))
    queued_before = len(re.findall(r"\(queue active\)", r.log_text()))
    for dom in cases:
        assert etrn(r, dom)[0] == 253
    for dom, q in qids.items():
        r.wait_log(r"%s: to=<u@%s>, relay=none, delay=[\d.]+, delays=[\d./]+, dsn=4\.4\.6, status=deferred "
                   r"\(mail for %s loops back to myself\)" % (q, re.escape(dom), re.escape(dom)), timeout=15)
    for dom, q in qids.items():
        rows = wait_until(lambda: [x for x in rcpt_rows(r, dom) if "4.4.6" in (x["last_reply"] or "")], 10,
                          what="%s deferred with 4.4.6 in the queue" % dom)
        assert len(rows) == 1, rows
        assert r.queue.message(q) is not None
    # what the operator sees: each message's reason, each domain's last error
    queue = [json.loads(x) for x in etrnctl(r, "--json", "queue").splitlines()]
    assert sorted(m["queue_id"] for m in queue if "loops back to myself" in json.dumps(m)) == \
        sorted(qids.values()), queue

    def domains_say_why():
        recs = [json.loads(x) for x in etrnctl(r, "--json", "domains").splitlines()]
        errs = {d.get("domain"): d.get("last_error") or "" for d in recs}
        return all("4.4.6 mail for %s loops back to myself" % d in errs.get(d, "") for d in cases) and errs

    wait_until(domains_say_why, 10, what="etrnctl domains to show each loop")
    # nothing came back into relayd, and no DSN went out
    assert len(re.findall(r"\(queue active\)", r.log_text())) == queued_before, r.log_tail()
    assert back.conns == 0


# --- at most max_mx_addresses -------------------------------------------------------------


class CountingListeners:
    """Plain TCP listeners on addrs:port that count connections and close
    them at once (a site that hangs up before the greeting)."""

    def __init__(self, addrs, port):
        self.count = 0
        self.lock = threading.Lock()
        self.socks = []
        for a in addrs:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((a, port))
            s.listen(64)
            self.socks.append(s)
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s):
        while True:
            try:
                c, _ = s.accept()
            except OSError:
                return
            with self.lock:
                self.count += 1
            c.close()

    def close(self):
        for s in self.socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def test_at_most_max_mx_addresses_per_run(denv, sdns):
    """20 MX hosts with 20 addresses each: one run tries 5 addresses
    (the default max_mx_addresses), not 320."""
    addrs = ["127.0.9.%d" % i for i in range(1, 21)]
    port = denv.common_port(addrs)
    lst = CountingListeners(addrs, port)
    try:
        script = {"wide.test": {"MX": [(10 + i, "mx%02d.wide.test" % i) for i in range(20)]}}
        for i in range(20):
            script["mx%02d.wide.test" % i] = {"A": list(addrs)}
        dns = sdns(script)
        r = denv.relayd(domains={"wide.test": {"mode": "hold", "route": "mx"}}, dns_servers=dns.server,
                        delivery_port=str(port), connect_timeout="2s")
        with Client(r) as c:
            c.send("s@sender.test", ["u@wide.test"], message("wide"))
        off = r.log_size()
        assert etrn(r, "wide.test")[0] == 253
        r.wait_log(r"wide\.test: delivery deferred", timeout=30, since=off)
        assert lst.count == 5, "%d connection attempts in one run" % lst.count
    finally:
        lst.close()


# --- DNS servers and DNS failures ---------------------------------------------------------


def test_dns_servers_change_on_sighup(denv):
    site = denv.sink("mx", host="127.0.0.2", port=denv.common_port(["127.0.0.2"]))
    d = denv.dns(mx=[("hup.test", "mx.hup.test", 10)], hosts={"mx.hup.test": "127.0.0.2"})
    r = denv.relayd(domains={"hup.test": {"mode": "hold", "route": "mx"}}, dns_servers="127.0.0.1:1",
                    delivery_port=str(site.port), connect_timeout="2s")
    with Client(r) as c:
        q = c.send("s@sender.test", ["u@hup.test"], message("hup"))
    assert etrn(r, "hup.test")[0] == 253
    r.wait_log(r"%s: to=<u@hup\.test>, relay=none, .*dsn=4\.4\.3, status=deferred "
               r"\(DNS lookup of MX for hup\.test failed: connection refused\)" % q, timeout=15)
    r.keys["dns_servers"] = d.server
    r.write_config()
    off = r.reload()
    r.wait_log(r"configuration reloaded", timeout=10, since=off)
    assert etrn(r, "hup.test")[0] == 253
    (t,) = site.wait_for(1, 15, "delivery through the new DNS server")
    assert subject_of(t.data) == "hup"
    etrn_until_drained(r, "hup.test", 10)


# domain -> (script entries, the reason every recipient must be deferred with)
BROKEN = {
    "servfail.test": ({"servfail.test": {"MX": "SERVFAIL"}},
                      "DNS lookup of MX for servfail.test failed: SERVFAIL"),
    "refused.test": ({"refused.test": {"MX": "REFUSED"}},
                     "DNS lookup of MX for refused.test failed: REFUSED"),
    "silent.test": ({"silent.test": {"MX": "TIMEOUT"}},
                    "DNS lookup of MX for silent.test failed: timed out"),
    # c-ares drops an A record whose RDLENGTH is not 4 and says NODATA
    "badlen.test": ({"badlen.test": {"MX": [(10, "mx.badlen.test")]},
                     "mx.badlen.test": {"A": "BAD_RDLENGTH"}},
                    "DNS lookup of A for mx.badlen.test failed: bad RDLENGTH in an A record"),
    # ... and MX records under another owner name, and says NODATA (implicit MX!)
    "owner.test": ({"owner.test": {"MX": "WRONG_OWNER", "A": ["127.0.0.2"]}},
                   "DNS lookup of MX for owner.test failed: answer for another name"),
    # ... and takes an answer with TC set over TCP as it is: empty
    "tc.test": ({"tc.test": {"MX": "TC", "A": ["127.0.0.2"]}},
                "DNS lookup of MX for tc.test failed: truncated answer (TC set)"),
    # MX records whose only host does not exist: no implicit MX to the A
    "nomx.test": ({"nomx.test": {"MX": [(10, "gone.nomx.test")], "A": ["127.0.0.2"]}},
                  "DNS lookup of AAAA for gone.nomx.test failed: NXDOMAIN"),
}


def test_unusable_dns_answers_defer_with_the_query_named(denv, sdns):
    """Every answer relayd cannot use defers each recipient (4.4.3) with a
    reason naming the query, its type and the rcode or fault; nothing is
    bounced and nothing goes to the domain's own address."""
    site = denv.sink("domain-a", host="127.0.0.2", port=denv.common_port(["127.0.0.2"]))
    back = denv.sink("sender-mta", port=site.port)
    script = {"sender.test": {"MX": [(10, "mx.sender.test")]}, "mx.sender.test": {"A": ["127.0.0.1"]}}
    for entries, _ in BROKEN.values():
        script.update(entries)
    dns = sdns(script)
    r = denv.relayd(domains={d: {"mode": "hold", "route": "mx"} for d in BROKEN}, dns_servers=dns.server,
                    delivery_port=str(site.port), connect_timeout="2s")
    qids = {}
    with Client(r) as c:
        for dom in BROKEN:
            qids[dom] = c.send("s@sender.test", ["u@" + dom, "v@" + dom], message(dom))
    for dom in BROKEN:
        assert etrn(r, dom)[0] == 253
    for dom, (_, why) in BROKEN.items():
        for u in ("u", "v"):
            r.wait_log(r"%s: to=<%s@%s>, relay=none, delay=[\d.]+, delays=[\d./]+, dsn=4\.4\.3, status=deferred \(%s\)" % (
                qids[dom], u, re.escape(dom), re.escape(why)), timeout=20)
        rows = wait_until(lambda: [x for x in rcpt_rows(r, dom) if x["attempts"] == 1], 10,
                          what="both recipients of %s deferred in the queue" % dom)
        assert len(rows) == 2, rows
        assert all(why in (x["last_reply"] or "") and (x["last_reply"] or "").startswith("451 4.4.3")
                   for x in rows), rows
    assert "bounced" not in r.log_text()
    assert site.count() == 0 and site.conns == 0 and back.conns == 0
    assert r.queue.count() == len(BROKEN)


# --- the wildcard-listen loop, in a network namespace of its own ------------------------------

NETNS_ADDR = "192.0.2.1"  # TEST-NET-1, an interface address inside the namespace only
NETNS_LATE = "192.0.2.2"  # added to the namespace while relayd runs


def wildcard_loop_in_netns(workdir):
    """Runs inside `unshare -n`: lo up with an extra address, relayd on a
    wildcard listen (*:P) delivering to port P, a domain whose MX is that
    interface address; then an address added while relayd runs, which
    counts as relayd's own after SIGHUP. Prints what happened as key=value
    lines."""
    from relayd_fixture import Relayd

    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "addr", "add", NETNS_ADDR + "/32", "dev", "lo"], check=True)
    dns = ScriptedDNS({"wild.test": {"MX": [(10, "mx.wild.test")]}, "mx.wild.test": {"A": [NETNS_ADDR]},
                       "late.test": {"MX": [(10, "mx.late.test")]}, "mx.late.test": {"A": [NETNS_LATE]}}).start()
    port = free_port()
    r = Relayd(workdir, port=port, listen="*:%d" % port, dns_servers=dns.server, delivery_port=str(port),
               connect_timeout="2s", domains={"wild.test": {"mode": "hold", "route": "mx"},
                                              "late.test": {"mode": "hold", "route": "mx"}})
    try:
        r.start()
        with Client(r) as c:
            q = c.send("s@sender.test", ["u@wild.test"], message("wild"))
        assert etrn(r, "wild.test")[0] == 253
        try:
            r.wait_log(r"%s: to=<u@wild\.test>, relay=none, .*dsn=4\.4\.6, status=deferred "
                       r"\(mail for wild\.test loops back to myself\)" % q, timeout=15)
            print("deferred=yes")
        except AssertionError:
            print("deferred=no")
        print("queued_lines=%d" % len(re.findall(r"\(queue active\)", r.log_text())))
        print("still_queued=%s" % ("yes" if r.queue.message(q) is not None else "no"))

        # an address this host gains after the start is relayd's own from the next SIGHUP
        with Client(r) as c:
            q2 = c.send("s@sender.test", ["u@late.test"], message("late"))
        subprocess.run(["ip", "addr", "add", NETNS_LATE + "/32", "dev", "lo"], check=True)
        off = r.reload()
        r.wait_log(r"configuration reloaded", timeout=10, since=off)
        assert etrn(r, "late.test")[0] == 253
        try:
            r.wait_log(r"%s: to=<u@late\.test>, relay=none, .*dsn=4\.4\.6, status=deferred "
                       r"\(mail for late\.test loops back to myself\)" % q2, timeout=15, since=off)
            print("late_deferred=yes")
        except AssertionError:
            print("late_deferred=no")
        print("late_queued_lines=%d" % len(re.findall(r"\(queue active\)", r.log_text())))
    finally:
        rc = r.stop()
        dns.stop()
        problems = r.check_health() + ([] if rc == 0 else ["exit status %s" % rc])
        print("health=%s" % ("ok" if not problems else "; ".join(problems)))
        print("log<<", r.log_tail(30).replace("\n", "\n  "))


def test_wildcard_listen_mx_at_own_interface_address_defers(tmp_path):
    """The usual `listen = *:25` and an MX that points at one of this host's
    interface addresses (not loopback): relayd must see itself there, defer
    with 4.4.6, and never deliver the message to itself (which loops until
    the hop limit); an interface address added later counts after SIGHUP."""
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYTHONPATH=here + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run(
        ["unshare", "-n", "--", sys.executable, "-c",
         "import sys, test_routing; test_routing.wildcard_loop_in_netns(sys.argv[1])", str(tmp_path / "ns")],
        env=env, capture_output=True, text=True, timeout=120)
    out = p.stdout
    assert p.returncode == 0, "netns run failed (%d):\n%s\n%s" % (p.returncode, out, p.stderr)
    assert "deferred=yes" in out, out
    assert "queued_lines=1" in out, "the message came back into relayd:\n" + out
    assert "still_queued=yes" in out, out
    # the address added later, after SIGHUP (re-read interface addresses)
    assert "late_deferred=yes" in out, out
    assert "late_queued_lines=2" in out, "the message came back into relayd:\n" + out
    assert "health=ok" in out, out
