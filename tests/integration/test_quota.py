# test_quota: storage an ISP can plan (issue 11). Per-domain queue quotas
# (max_queue_messages, max_queue_bytes: a section with subdomains = yes is one
# quota), reservations of sessions receiving right now, and the free-space
# reserve (queue_minfree) on a small tmpfs, against the real daemon.

import os
import re
import subprocess
import threading

from relayd_fixture import make_message, queue_id_of, wait_until
from sink import subject_of


def route(sink):
    return "127.0.0.1:%d" % sink.port


def send(c, sender, rcpts, subject, size=None, lines=None):
    """One transaction on the raw client c: the RCPT replies, then the final
    reply (None when no recipient was accepted)."""
    opt = " SIZE=%d" % size if size is not None else ""
    c.expect("MAIL FROM:<%s>%s" % (sender, opt), 250)
    codes = [c.cmd("RCPT TO:<%s>" % r) for r in rcpts]
    if not any(x.code == 250 for x in codes):
        c.expect("RSET", 250)
        return codes, None
    c.expect("DATA", 354)
    c.send(make_message(subject=subject, body_lines=lines or ["quota test %s" % subject]) + b".\r\n")
    return codes, c.reply(timeout=30)


def test_message_quota_refuses_the_domain_only_until_it_drains(denv):
    site = denv.sink("site", start=False)
    other = denv.sink("other", start=False)
    r = denv.relayd(domains={"example.org": {"mode": "hold", "route": route(site), "max_queue_messages": "5"},
                             "other.test": {"mode": "hold", "route": route(other)}})
    c = r.raw()
    c.ehlo()
    for i in range(5):
        codes, final = send(c, "a@b.test", ["u%d@example.org" % i], "q%d" % i)
        assert [x.code for x in codes] == [250] and final.code == 250, (codes, final)
    # the sixth: 452 4.2.2 naming the domain; the other domain of the same
    # transaction is accepted, and nothing is queued for the refused one
    codes, final = send(c, "a@b.test", ["u5@example.org", "w@other.test"], "six")
    assert codes[0].code == 452 and codes[0].line.startswith("452 4.2.2 <u5@example.org>: "), codes[0]
    assert "example.org" in codes[0].line.split(":", 1)[1], codes[0]
    assert codes[1].code == 250, codes[1]
    assert final.code == 250, final
    six = queue_id_of(final)
    rcpts = [x["address"] for x in r.queue.message(six)["recipients"]]
    assert rcpts == ["w@other.test"], rcpts
    r.wait_log(r"warning: quota: example\.org reached its queue quota \(messages=5/5", timeout=10)
    assert len(re.findall(r"reached its queue quota", r.log_text())) == 1
    # a second refusal is logged as a reject, not as a second "reached"
    codes, _ = send(c, "a@b.test", ["u6@example.org"], "seven")
    assert codes[0].code == 452, codes[0]
    assert len(re.findall(r"reached its queue quota", r.log_text())) == 1

    # the site asks for its mail: delivered, and new mail is accepted again
    site.start()
    c.expect("ETRN example.org", 253)
    got = site.wait_for(5, 30)
    assert sorted(subject_of(t.data) for t in got) == ["q0", "q1", "q2", "q3", "q4"]
    r.wait_log(r"quota: example\.org is below its queue quota again", timeout=30)
    codes, final = send(c, "a@b.test", ["u7@example.org"], "after")
    assert codes[0].code == 250 and final.code == 250, (codes, final)
    c.expect("QUIT", 221)


def test_byte_quota_with_size_and_subdomains_together(denv):
    """max_queue_bytes on a subdomains = yes section: one quota for all of it.
    A RCPT whose declared SIZE would take it over is refused; without SIZE
    the message is judged once the section is over."""
    site = denv.sink("site", start=False)
    r = denv.relayd(domains={"cust.example": {"mode": "hold", "route": route(site), "subdomains": "yes",
                                              "max_queue_bytes": "40000"}})
    c = r.raw()
    c.ehlo()
    big = ["x" * 998] * 15  # about 15 KB
    codes, final = send(c, "a@b.test", ["u@a.cust.example"], "a", size=16000, lines=big)
    assert final.code == 250, final
    codes, final = send(c, "a@b.test", ["u@b.cust.example", "v@b.cust.example"], "b", size=16000, lines=big)
    assert [x.code for x in codes] == [250, 250] and final.code == 250, (codes, final)
    # about 31 KB queued: 16,000 more would pass 40,000
    codes, final = send(c, "a@b.test", ["u@c.cust.example"], "c", size=16000, lines=big)
    assert codes[0].line.startswith("452 4.2.2 <u@c.cust.example>: "), codes[0]
    assert "cust.example" in codes[0].line, codes[0]
    # a small one still fits
    codes, final = send(c, "a@b.test", ["u@c.cust.example"], "d", size=2000)
    assert codes[0].code == 250 and final.code == 250, (codes, final)
    c.expect("QUIT", 221)
    # what is queued for the section, as the triggers counted it, is what the
    # queue holds (the multi-domain message once per domain)
    rows = r.queue.query("SELECT domain, messages, bytes FROM domain_usage WHERE messages > 0 ORDER BY domain")
    sizes = {m["queue_id"]: m["size"] for m in r.queue.messages()}
    per = {}
    for row in r.queue.query("SELECT m.queue_id, r.domain FROM recipient r JOIN message m ON m.id = r.message_id"):
        per.setdefault(row["domain"], set()).add(row["queue_id"])
    assert {x["domain"]: (x["messages"], x["bytes"]) for x in rows} == \
        {d: (len(q), sum(sizes[i] for i in q)) for d, q in per.items()}


def test_sessions_receiving_now_hold_their_place(denv):
    """Reservations: with one message left under the quota, a second session's
    RCPT is refused while the first one's message is still being received."""
    site = denv.sink("site", start=False)
    r = denv.relayd(domains={"example.org": {"mode": "hold", "route": route(site), "max_queue_messages": "2"}})
    c0 = r.raw()
    c0.ehlo()
    codes, final = send(c0, "a@b.test", ["u0@example.org"], "first")
    assert final.code == 250
    c1, c2 = r.raw(), r.raw()
    c1.ehlo()
    c2.ehlo()
    c1.expect("MAIL FROM:<a@b.test>", 250)
    c1.expect("RCPT TO:<u1@example.org>", 250)  # holds the last place
    c2.expect("MAIL FROM:<a@b.test>", 250)
    rep = c2.cmd("RCPT TO:<u2@example.org>")
    assert rep.line.startswith("452 4.2.2"), rep
    # the first session gives its place back: the second may have it
    c1.expect("RSET", 250)
    c2.expect("RCPT TO:<u2@example.org>", 250)
    c2.expect("DATA", 354)
    c2.send(make_message(subject="second") + b".\r\n")
    assert c2.reply(timeout=30).code == 250
    for c in (c0, c1, c2):
        c.expect("QUIT", 221)


def test_quota_shown_and_checked_by_etrnctl(denv, tmp_path):
    from test_etrnctl import Etrnctl, etrnctl_binary
    site = denv.sink("site", start=False)
    sock = str(tmp_path / "ctl" / "control.sock")
    r = denv.relayd(domains={"example.org": {"mode": "hold", "route": route(site), "max_queue_messages": "5"}},
                    control_socket=sock)
    e = Etrnctl(etrnctl_binary(), tmp_path)
    e.socket = sock
    c = r.raw()
    c.ehlo()
    for i in range(4):
        assert send(c, "a@b.test", ["u%d@example.org" % i], "m%d" % i)[1].code == 250
    rec = [x for x in e.run("domains", "--json").json() if x["domain"] == "example.org"][0]
    assert (rec["quota_messages"], rec["quota_used_messages"]) == (5, 4), rec
    res = e.run("domains")
    assert re.search(r"(?m)^example\.org +hold +4 +\d+ +0 +80% ", res.out), res
    res = e.run("check")
    assert res.rc == 1 and res.out.startswith("RELAYD WARNING - ") and "example.org at 80% of its quota" in res.out, res
    assert send(c, "a@b.test", ["u4@example.org"], "m4")[1].code == 250
    codes, _ = send(c, "a@b.test", ["u5@example.org"], "m5")
    assert codes[0].code == 452
    res = e.run("check")
    assert res.rc == 2 and "example.org at 100% of its quota" in res.out, res
    stats = {x["domain"]: x for x in e.run("stats", "--json").json()}
    assert stats["example.org"]["quota_refused"] == 1, stats
    assert stats[""]["free_bytes"] > stats[""]["queue_minfree"] > 0, stats[""]
    c.expect("QUIT", 221)


def test_reserve_refuses_mail_before_the_disk_fills(denv, mounts, tmp_path):
    """The queue on a 24 MB tmpfs with queue_minfree = 8M: MAIL gets 452 4.3.1
    before the file system fills, nothing acknowledged is lost, and intake
    resumes once the queue is delivered."""
    mnt = str(tmp_path / "smallfs")
    os.makedirs(mnt)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", mnt],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    assert p.returncode == 0, "cannot mount a tmpfs (needs root): %s" % p.stdout.decode(errors="replace")
    mounts.append(mnt)
    site = denv.sink("site", start=False)
    r = denv.relayd(domains={"example.org": {"mode": "hold", "route": route(site)}},
                    database=os.path.join(mnt, "q", "queue.db"), max_message_size="1M", queue_minfree="8M")
    c = r.raw(timeout=60)
    c.ehlo()
    acked = []
    refused = None
    for i in range(200):
        rep = c.cmd("MAIL FROM:<a@b.test>")
        if rep.code != 250:
            refused = rep
            break
        c.expect("RCPT TO:<u%d@example.org>" % i, 250)
        c.expect("DATA", 354)
        c.send(make_message(subject="fill%03d" % i, body_lines=[("%04d " % i) + "f" * 990] * 200) + b".\r\n")
        rep = c.reply(timeout=60)
        assert rep.code == 250, "refused at DATA, not at MAIL: %r" % rep
        acked.append("fill%03d" % i)
    assert refused is not None, "24 MB never reached the reserve after 200 x 200 KB"
    assert refused.line == "452 4.3.1 Insufficient system storage", refused
    assert len(acked) >= 20, acked
    st = os.statvfs(mnt)
    assert st.f_bavail * st.f_frsize > 4 * 1024 * 1024, "the file system filled: the reserve did not hold"
    r.wait_log(r"warning: quota: free space for the queue is below queue_minfree", timeout=10)
    assert "disk is full" not in r.log_text().lower() and "SQLITE_FULL" not in r.log_text()
    # every acknowledged message is delivered after an ETRN
    site.start()
    c.expect("ETRN example.org", 253)
    got = site.wait_for(len(acked), 120)
    assert sorted(subject_of(t.data) for t in got) == acked
    wait_until(lambda: r.queue.count() == 0, 60, what="queue drained")
    # the freed pages count as free: intake resumes (the reserve is read
    # at most a second late, so wait for the MAIL to be taken)
    def mail_ok():
        rep = c.cmd("MAIL FROM:<a@b.test>")
        if rep.code == 250:
            return True
        assert rep.line == "452 4.3.1 Insufficient system storage", rep
        return False
    wait_until(mail_ok, 30, interval=0.5, what="intake resumes")
    c.expect("RCPT TO:<again@example.org>", 250)
    c.expect("DATA", 354)
    c.send(make_message(subject="again") + b".\r\n")
    assert c.reply(timeout=30).code == 250
    r.wait_log(r"quota: free space for the queue is above queue_minfree again", timeout=10)
    c.expect("QUIT", 221)
