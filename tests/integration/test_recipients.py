# test_recipients: per-domain recipients lists (relayd.conf(5) `recipients`).
# A listed address is accepted, case-insensitively; "@domain" accepts any
# local part; an unlisted one gets 550 5.1.1 at RCPT and nothing of it is
# queued; SIGHUP re-reads the file, and a broken file keeps the old list.
# relayd -t warns about domains without a list and refuses a broken one.

import os
import time

from relayd_fixture import make_message, queue_id_of, run_relayd, wait_until


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def start(relayd_factory, tmp_path, text):
    lst = str(tmp_path / "example.org.rcpts")
    write(lst, text)
    r = relayd_factory(
        domains={
            "example.org": {"recipients": lst},
            "wild.test": {"recipients": lst, "subdomains": "yes"},
            "open.test": {},
        }
    )
    return r, lst


LIST = """# the users of example.org
bob@example.org
Alice.Smith@Example.ORG   # mixed case in the file
"quoted user"@example.org
@wild.test
"""


def rcpt(c, addr):
    return c.cmd("RCPT TO:<%s>" % addr)


def test_listed_unlisted_case_and_wildcard(relayd_factory, tmp_path):
    r, _ = start(relayd_factory, tmp_path, LIST)
    c = r.raw()
    c.ehlo()
    c.expect("MAIL FROM:<sender@elsewhere.test>", 250)
    for ok in ("bob@example.org", "BOB@EXAMPLE.ORG", "alice.smith@example.org",
               '"Quoted User"@example.org', "anyone@wild.test", "x.y@WILD.test",
               "whoever@open.test"):
        rep = rcpt(c, ok)
        assert rep.code == 250, (ok, rep)
    for bad in ("carol@example.org", "bob.x@example.org", "bob@sub.wild.test"):
        rep = rcpt(c, bad)
        assert rep.code == 550 and rep.line.startswith("550 5.1.1 <"), (bad, rep)
        assert "User unknown" in rep.text, rep
    c.expect("DATA", 354)
    c.send(make_message("listed") + b".\r\n")
    qid = queue_id_of(c.reply())
    got = sorted(x["address"] for x in r.queue.message(qid)["recipients"])
    assert got == sorted(["bob@example.org", "BOB@example.org", "alice.smith@example.org",
                          '"Quoted User"@example.org', "anyone@wild.test", "x.y@wild.test",
                          "whoever@open.test"]), got
    r.wait_log(r"NOQUEUE: reject: RCPT from \S+: 550 5\.1\.1 <carol@example\.org>")


def test_unlisted_only_queues_nothing(relayd_factory, tmp_path):
    r, _ = start(relayd_factory, tmp_path, LIST)
    c = r.raw()
    c.ehlo()
    c.expect("MAIL FROM:<sender@elsewhere.test>", 250)
    c.expect("RCPT TO:<nobody@example.org>", 550)
    # RFC 5321 §3.3: no valid recipient, so no DATA
    c.expect("DATA", 503)
    c.expect("QUIT", 221)
    # positive marker that the session got past RCPT: its disconnect line
    r.wait_log(r"disconnect from .* rcpt=0/1")
    assert r.queue.count() == 0


def test_sighup_rereads_and_broken_file_keeps_old_list(relayd_factory, tmp_path):
    r, lst = start(relayd_factory, tmp_path, "bob@example.org\n")
    c = r.raw()
    c.ehlo()
    c.expect("MAIL FROM:<s@elsewhere.test>", 250)
    assert rcpt(c, "carol@example.org").code == 550
    c.expect("QUIT", 221)

    write(lst + ".new", "carol@example.org\n")
    os.rename(lst + ".new", lst)
    off = r.reload()
    r.wait_log(r"recipients: %s: 1 entries loaded" % lst, since=off)
    r.wait_log(r"configuration reloaded", since=off)
    c = r.raw()
    c.ehlo()
    c.expect("MAIL FROM:<s@elsewhere.test>", 250)
    assert rcpt(c, "carol@example.org").code == 250
    assert rcpt(c, "bob@example.org").code == 550
    c.expect("QUIT", 221)

    # a broken line: the reload goes on, the list stays as it was
    write(lst, "dave@example.org\nthis is not an address\n")
    off = r.reload()
    m = r.wait_log(r"recipients: (.*); domain example\.org keeps its previous list \(1 entries\)",
                   since=off)
    assert "%s:2: unexpected text after the address" % lst in m.group(1), m.group(0)
    r.wait_log(r"configuration reloaded", since=off)
    c = r.raw()
    c.ehlo()
    c.expect("MAIL FROM:<s@elsewhere.test>", 250)
    assert rcpt(c, "carol@example.org").code == 250
    assert rcpt(c, "dave@example.org").code == 550
    c.expect("QUIT", 221)

    # a missing file: the same
    os.unlink(lst)
    off = r.reload()
    r.wait_log(r"recipients: %s: No such file or directory; domain example\.org keeps" % lst,
               since=off)
    r.wait_log(r"configuration reloaded", since=off)
    c = r.raw()
    c.ehlo()
    c.expect("MAIL FROM:<s@elsewhere.test>", 250)
    assert rcpt(c, "carol@example.org").code == 250


def test_check_warns_and_refuses_broken(tmp_path):
    lst = str(tmp_path / "list")
    write(lst, "bob@example.org\n")
    conf = str(tmp_path / "relayd.conf")
    base = "hostname = relay.test\nlisten = 127.0.0.1:2525\ndatabase = %s\n" % (tmp_path / "q.db")
    write(conf, base + "[domain example.org]\nrecipients = %s\n[domain open.test]\n" % lst)
    p = run_relayd(["-t", "-f", conf])
    err = p.stderr.decode()
    assert p.returncode == 0, err
    assert "warning: domain open.test has no recipients list" in err, err
    assert "domain example.org has no" not in err, err

    write(lst, "bob@example.org\n@\n")
    p = run_relayd(["-t", "-f", conf])
    err = p.stderr.decode()
    assert p.returncode == 78, err
    assert "%s:2: no domain after '@'" % lst in err, err


def test_start_refuses_broken_list(relayd_factory, tmp_path):
    lst = str(tmp_path / "list")
    write(lst, "<bob@example.org>\n")
    try:
        relayd_factory(domains={"example.org": {"recipients": lst}})
    except AssertionError as e:
        assert "exited with status 78" in str(e), e
        assert "%s:1: not an address" % lst in str(e), e
    else:
        raise AssertionError("relayd started with a broken recipients file")


def test_sighup_during_a_reload_is_not_lost(relayd_factory, tmp_path):
    """A SIGHUP that comes while a large list is being read (on the thread
    pool) runs another reload after it: the file as it is after the last
    signal is the one in effect, however the reloads overlapped."""
    bulk = "".join("user%06d@example.org\n" % i for i in range(300000))
    r, lst = start(relayd_factory, tmp_path, "first@example.org\n")
    write(lst + ".2", bulk + "second@example.org\n")
    write(lst + ".3", bulk + "third@example.org\n")
    os.rename(lst + ".2", lst)
    off = r.reload()
    time.sleep(0.02)  # not a timing assertion: lets the two signals arrive apart
    os.rename(lst + ".3", lst)
    r.reload()
    r.wait_log(r"configuration reloaded", since=off, timeout=30)

    def third_accepted():
        c = r.raw()
        c.ehlo()
        c.expect("MAIL FROM:<s@elsewhere.test>", 250)
        ok = rcpt(c, "third@example.org").code == 250
        c.expect("QUIT", 221)
        c.close()
        return ok

    wait_until(third_accepted, 30, interval=0.2, what="the last list to be in effect")
    c = r.raw()
    c.ehlo()
    c.expect("MAIL FROM:<s@elsewhere.test>", 250)
    assert rcpt(c, "second@example.org").code == 550
    assert rcpt(c, "user123456@example.org").code == 250
