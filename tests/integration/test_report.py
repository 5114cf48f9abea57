# test_report: the per-domain report that `etrnctl summary`, `domains`,
# `stats` and `check` read (issue 9) is kept by triggers (schema 004/005) in
# the transactions that change the queue, not counted at each request. After
# a mix of intake, delivery, deletion, hold and release, every figure relayd
# reports - messages, recipients' messages held and not, bytes, oldest
# arrival, qshape's age buckets, the queue's totals - equals what the queue
# holds, counted here from its rows. Start-up checks only the header and the
# schema: a queue with a damaged data page still gets relayd ready, and the
# whole-file check after it stops relayd with 70; `etrnctl check --deep`
# runs that check on demand.

import os
import sqlite3
import subprocess
import time

from relayd_fixture import Relayd, wait_until
from sink import Client, Sink, message
from test_control import ctl, ok
from test_etrnctl import etrnctl_binary

SENDER = "sender@sender.test"
LIMITS = [300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 76800]


def backdate(db, ages, domains):
    """Messages that arrived `age` seconds ago, one per (age, domain), oldest
    first, written as relayd writes them (the triggers see them); relayd is
    stopped. Ids grow with arrival, as relayd's do."""
    now = int(time.time())
    con = sqlite3.connect(db)
    with con:
        for n, age in enumerate(sorted(ages, reverse=True)):
            for d in domains:
                mid = con.execute(
                    "INSERT INTO message (queue_id, arrival, sender, size, client_addr, client_helo)"
                    " VALUES (?, ?, ?, ?, '127.0.0.1', 'fill') RETURNING id",
                    ("OLD%05d%s" % (n, d[:3].upper()), now - age, SENDER, 100 + n)).fetchone()[0]
                con.execute("INSERT INTO message_body (message_id, data) VALUES (?, zeroblob(?))",
                            (mid, 100 + n))
                con.execute("INSERT INTO recipient (message_id, domain, rdomain, address) VALUES (?, ?, ?, ?)",
                            (mid, d, d[::-1], "old%d@%s" % (n, d)))
    con.close()


def truth(db, now):
    """What the queue holds, per domain, counted from its rows."""
    con = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
    rows = con.execute(
        "SELECT r.domain, r.message_id, max(r.state = 0), max(r.state = 1), m.arrival, m.size"
        " FROM recipient r JOIN message m ON m.id = r.message_id GROUP BY r.domain, r.message_id").fetchall()
    total = con.execute("SELECT count(*), coalesce(sum(size), 0) FROM message").fetchone()
    con.close()
    out = {}
    for domain, _, queued, held, arrival, size in rows:
        d = out.setdefault(domain, {"messages": 0, "held": 0, "queued": 0, "bytes": 0, "oldest": None,
                                    "ages": [0] * 10})
        d["messages"] += 1
        d["held"] += held
        d["queued"] += queued
        d["bytes"] += size
        d["oldest"] = arrival if d["oldest"] is None else min(d["oldest"], arrival)
        age = now - arrival
        b = next((i for i, lim in enumerate(LIMITS) if age < lim), 9)
        d["ages"][b] += 1
    return out, total


def check_report(r):
    now = int(time.time())
    want, (tmsgs, tbytes) = truth(r.db, now)
    summary = {x["domain"]: x for x in ok(r, "summary")}
    domains = {x["domain"]: x for x in ok(r, "domains") if x["messages"]}
    stats = [x for x in ok(r, "stats") if x["domain"] == ""][0]
    assert set(summary) == set(want) == set(domains), (sorted(summary), sorted(want), sorted(domains))
    for name, w in want.items():
        s, d = summary[name], domains[name]
        assert (s["messages"], s["bytes"], s["ages"]) == (w["messages"], w["bytes"], w["ages"]), (name, s, w)
        assert (d["messages"], d["bytes"], d["held_messages"], d["oldest"]) == \
            (w["messages"], w["bytes"], w["held"], w["oldest"]), (name, d, w)
    assert (stats["queue_messages"], stats["queue_bytes"]) == (tmsgs, tbytes), (stats, tmsgs, tbytes)
    return want


def test_report_equals_the_queue_after_intake_delivery_delete_hold(tmp_path):
    site = Sink()
    site.start()
    doms = {"a.test": {"mode": "hold", "route": "127.0.0.1:%d" % site.port},
            "b.test": {"mode": "hold", "route": "127.0.0.1:%d" % site.port},
            "c.test": {"mode": "hold", "route": "127.0.0.1:%d" % site.port}}
    r = Relayd(str(tmp_path / "r"), domains=doms)
    try:
        r.start()
        r.stop()
        # Mail from before: two messages per domain around each bucket's
        # limit (40 s either side: inside the 5-minute slot the limit cuts),
        # and some a day old.
        ages = [100, 86400 * 2] + [lim + s for lim in LIMITS for s in (-40, 40)]
        backdate(r.db, ages, ["a.test", "b.test"])
        r.start()
        with Client(r) as c:
            qa = [c.send(SENDER, ["x%d@a.test" % i, "y%d@a.test" % i, "z%d@b.test" % i],
                         message("m%d" % i, lines=["x" * (50 * i)])) for i in range(6)]
            qc = [c.send(SENDER, ["u%d@c.test" % i, "v%d@a.test" % i], message("c%d" % i)) for i in range(4)]
        check_report(r)
        # an operator holds one message, then all of b.test, releases one
        ok(r, "hold", id=qa[0])
        ok(r, "hold", domain="b.test")
        ok(r, "release", id=qa[1])
        # deletes two, one of them held
        ok(r, "delete", id=[qa[0], qa[2]])
        check_report(r)
        # c.test is delivered; a.test's recipients of those messages stay
        site_before = len(site.transactions)
        ok(r, "flush", domain="c.test")
        site.wait_for(site_before + 4, 20)
        wait_until(lambda: not r.queue.query("SELECT 1 FROM recipient WHERE domain = 'c.test'"), 10,
                   what="c.test's recipients to leave the queue")
        want = check_report(r)
        assert "c.test" not in want and want["a.test"]["held"] == 0 and want["b.test"]["held"] > 0
        # delete a whole domain: its messages' other recipients stay
        ok(r, "delete", domain="b.test")
        want = check_report(r)
        assert "b.test" not in want
        # every bucket of a.test has mail (the backdated messages)
        assert all(want["a.test"]["ages"]), want["a.test"]
        # and after a restart (the table is on disk, not in relayd's memory)
        r.restart()
        check_report(r)
    finally:
        r.stop()
        site.stop()


def damage_a_body_page(db):
    """Overwrite the b-tree header of a leaf page of message_body: the
    header and schema pages are intact, the whole-file check is not."""
    con = sqlite3.connect(db)
    page_size = con.execute("PRAGMA page_size").fetchone()[0]
    pages = [p for (p,) in con.execute(
        "SELECT pageno FROM dbstat WHERE name = 'message_body' AND pagetype = 'leaf' ORDER BY pageno")]
    con.close()
    assert pages, "no leaf page of message_body"
    with open(db, "r+b") as f:
        f.seek((pages[len(pages) // 2] - 1) * page_size)
        f.write(b"\x55" * 64)


def test_damaged_data_page_stops_relayd_after_ready_with_70(tmp_path):
    r = Relayd(str(tmp_path / "r"))
    r.start()
    with Client(r) as c:
        for i in range(300):
            c.send(SENDER, ["u%d@example.org" % i], message("d%d" % i, lines=["y" * 200] * 10))
    assert r.stop() == 0
    damage_a_body_page(r.db)
    # Ready first: start-up reads the header and the schema only ...
    r.start()
    # ... then the background check finds the damage and relayd stops, 70.
    r.wait_log(r"queue %s is damaged \(quick_check: .+\); stopping" % r.db, timeout=30, since=r.log_start)
    assert r.wait_exit(30) == 70, r.log_tail()


def test_check_deep_reads_the_whole_queue(tmp_path):
    r = Relayd(str(tmp_path / "r"))
    r.start()
    try:
        with Client(r) as c:
            c.send(SENDER, ["u@example.org"], message("deep"))
        r.wait_log(r"queue .*: integrity check ok", timeout=30, since=r.log_start)
        env = dict(os.environ, ETRNCTL_SOCKET=r.keys["control_socket"])
        p = subprocess.run([etrnctl_binary(), "check", "--deep"], capture_output=True, text=True,
                           env=env, timeout=60)
        assert p.returncode == 0 and p.stdout.startswith("RELAYD OK - 1 message queued"), p
        recs, final = ctl(r, "integrity")
        assert final == {"ok": True} and recs == [{"integrity": "ok", "detail": "ok"}], (recs, final)
    finally:
        r.stop()
