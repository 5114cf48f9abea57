# test_ipv6_limits: per-client limits count an IPv6 client by its network
# (ipv6_prefix_length, default /64), not address by address, since one line
# or host holds a whole /64: max_connections_per_ip and the ETRN rate. The
# clients need several source addresses of one /64, so the test runs in a
# network namespace of its own (unshare(CLONE_NEWNET) for this thread only,
# then back): loopback up, documentation addresses on it.

import contextlib
import ctypes
import os
import subprocess

CLONE_NEWNET = 0x40000000
NET_A = "2001:db8:1:2::"  # one /64 ...
NET_B = "2001:db8:1:3::"  # ... and its neighbour


@contextlib.contextmanager
def private_network(addresses):
    """Run the body in a new network namespace with `addresses` on lo. Only the
    calling thread moves, and with it every process it starts (relayd)."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        if libc.unshare(CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
        try:
            subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=10)
            for a in addresses:
                subprocess.run(["ip", "-6", "addr", "add", a + "/64", "dev", "lo", "nodad"],
                               check=True, timeout=10)
            yield
        finally:
            if libc.setns(home, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back to the test's network")
    finally:
        os.close(home)


def test_connections_per_ip_count_the_64(relayd_factory):
    with private_network([NET_A + "1", NET_A + "2", NET_A + "3", NET_B + "1"]):
        r = relayd_factory(listen_host="::1", max_connections_per_ip=2)
        a = r.raw(source=NET_A + "1")
        b = r.raw(source=NET_A + "2")
        assert a.greeting.code == 220 and b.greeting.code == 220, (a.greeting, b.greeting)
        # a third address of the same /64 is the same client
        c = r.raw(source=NET_A + "3")
        assert c.greeting.line == (
            "421 4.7.0 relay.test Error: too many connections from your network "
            "2001:db8:1:2::/64"), c.greeting
        assert c.at_eof()
        r.wait_log(r"too many connections from one address from unknown\[2001:db8:1:2::3\]:\d+ "
                   r"\(network 2001:db8:1:2::/64\)")
        # the neighbouring /64 is another client
        d = r.raw(source=NET_B + "1")
        assert d.greeting.code == 220, d.greeting
        # a freed slot of the /64 is free for any of its addresses
        a.expect("QUIT", 221)
        assert a.at_eof()
        r.wait_log(r"disconnect from unknown\[2001:db8:1:2::1\]:\d+")
        e = r.raw(source=NET_A + "3")
        assert e.greeting.code == 220, e.greeting
        for x in (b, d, e):
            x.expect("QUIT", 221)


def test_prefix_length_128_counts_addresses(relayd_factory):
    with private_network([NET_A + "1", NET_A + "2"]):
        r = relayd_factory(listen_host="::1", max_connections_per_ip=1, ipv6_prefix_length=128)
        a = r.raw(source=NET_A + "1")
        b = r.raw(source=NET_A + "2")
        assert a.greeting.code == 220 and b.greeting.code == 220, (a.greeting, b.greeting)
        c = r.raw(source=NET_A + "1")
        assert c.greeting.line == (
            "421 4.7.0 relay.test Error: too many connections from your address"), c.greeting


def test_etrn_rate_counts_the_64(relayd_factory):
    with private_network([NET_A + "1", NET_A + "2", NET_B + "1"]):
        r = relayd_factory(listen_host="::1", etrn_rate="1/1h")
        a = r.raw(source=NET_A + "1")
        a.ehlo()
        a.expect("ETRN example.org", 251)
        b = r.raw(source=NET_A + "2")
        b.ehlo()
        rep = b.cmd("ETRN example.org")
        assert rep.line.startswith("458 4.7.0"), rep
        c = r.raw(source=NET_B + "1")
        c.ehlo()
        c.expect("ETRN example.org", 251)
