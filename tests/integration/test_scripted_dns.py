# test_scripted_dns: the scripted DNS server the routing tests rely on
# answers as its script says, over UDP and TCP: records, NXDOMAIN and
# NODATA, the error rcodes, silence, and each kind of broken answer.

import socket
import struct

import pytest

from dns import TYPE_A, TYPE_AAAA, TYPE_MX, query
from scripted_dns import ScriptedDNS, decode_name, tcp_query


@pytest.fixture
def sdns():
    s = ScriptedDNS({
        "ok.test": {"MX": [(20, "mx2.ok.test"), (10, "mx1.ok.test")], "A": ["192.0.2.1"],
                    "AAAA": ["2001:db8::1"]},
        "null.test": {"MX": [(0, "")]},
        "servfail.test": {"*": "SERVFAIL"},
        "refused.test": {"MX": "REFUSED"},
        "silent.test": {"*": "TIMEOUT"},
        "badlen.test": {"A": "BAD_RDLENGTH", "MX": "BAD_RDLENGTH"},
        "owner.test": {"MX": "WRONG_OWNER"},
        "tc.test": {"MX": "TC"},
    }).start()
    yield s
    s.stop()


def test_records_nxdomain_nodata(sdns):
    assert query(sdns.port, "ok.test", TYPE_MX) == (0, [(20, "mx2.ok.test"), (10, "mx1.ok.test")])
    assert query(sdns.port, "OK.test", TYPE_A) == (0, ["192.0.2.1"])
    assert query(sdns.port, "ok.test", TYPE_AAAA) == (0, ["2001:db8::1"])
    assert query(sdns.port, "null.test", TYPE_MX) == (0, [(0, "")])
    assert query(sdns.port, "nowhere.test", TYPE_MX) == (3, [])  # NXDOMAIN
    assert query(sdns.port, "null.test", TYPE_A) == (0, [])  # NODATA
    # the same over TCP
    flags, rcode, an, _ = tcp_query(sdns.port, "ok.test", TYPE_MX)
    assert (rcode, an) == (0, 2) and flags & 0x8000
    assert ("ok.test", "MX", "tcp") in sdns.asked("ok.test")
    # the script may change while it runs
    sdns.set("ok.test", {"MX": "SERVFAIL"})
    assert query(sdns.port, "ok.test", TYPE_MX)[0] == 2


def test_error_rcodes_and_silence(sdns):
    assert query(sdns.port, "servfail.test", TYPE_MX)[0] == 2
    assert query(sdns.port, "servfail.test", TYPE_A)[0] == 2
    assert query(sdns.port, "refused.test", TYPE_MX)[0] == 5
    with pytest.raises(socket.timeout):
        query(sdns.port, "silent.test", TYPE_MX, timeout=0.5)
    assert sdns.asked("silent.test", "MX")  # it was asked, it did not answer


def test_broken_answers(sdns):
    # an A record with RDLENGTH 5
    _, _, an, data = tcp_query(sdns.port, "badlen.test", TYPE_A)
    off = 12
    _, off = decode_name(data, off)
    off += 4
    _, off = decode_name(data, off)
    rtype, _, _, rdlen = struct.unpack("!HHIH", data[off : off + 10])
    assert (an, rtype, rdlen) == (1, TYPE_A, 5)
    # records under another owner name
    _, _, an, data = tcp_query(sdns.port, "owner.test", TYPE_MX)
    _, off = decode_name(data, 12)
    owner, _ = decode_name(data, off + 4)
    assert an == 1 and owner == "other-owner.test"
    # TC set over TCP too, with nothing in it
    flags, rcode, an, _ = tcp_query(sdns.port, "tc.test", TYPE_MX)
    assert flags & 0x0200 and rcode == 0 and an == 0
