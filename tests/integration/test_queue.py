# test_queue: properties of the SQLite queue other tools and the next stages
# rely on: WAL mode, a schema version, a per-domain index, the spool directory
# beside the database, and bounded memory for large messages.

import os
import re

from relayd_fixture import make_message, queue_id_of, split_received


def test_schema_version_and_wal(relayd):
    c = relayd.raw()
    c.ehlo()
    queue_id_of(c.send_message("a@b.test", ["u@example.org"], make_message()))
    q = relayd.queue
    assert q.query("PRAGMA journal_mode")[0]["journal_mode"] == "wal"
    assert q.query("PRAGMA user_version")[0]["user_version"] >= 1
    tables = {r["name"] for r in q.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"message", "message_body", "recipient", "domain_state"} <= tables, tables
    idx = q.query("SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'recipient'")
    assert any(r["sql"] and re.search(r"\(\s*domain\b", r["sql"]) for r in idx), idx
    assert os.path.isdir(relayd.db + ".spool"), "spool directory <database>.spool/ missing"


def vm_hwm_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_large_message_memory_bounded(relayd_factory):
    """A 50 MB message must not cost 50 MB of RAM: it is spooled to disk.
    (ASan's quarantine would hold freed buffers and blur the peak, so it is
    kept small for this process.)"""
    env = {"ASAN_OPTIONS": (os.environ.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=1").lstrip(":")}
    r = relayd_factory(max_message_size="100M", env=env)
    c = r.raw(timeout=120)
    c.ehlo()
    # warm up: one small message so per-process set-up is already in the baseline
    queue_id_of(c.send_message("a@b.test", ["u@example.org"], make_message()))
    before = vm_hwm_kb(r.pid)
    c.expect("MAIL FROM:<a@b.test> SIZE=%d" % (50 << 20), 250)
    c.expect("RCPT TO:<u@example.org>", 250)
    c.expect("DATA", 354)
    c.send(b"Subject: fifty megabytes\r\n\r\n")
    line = b"m" * 1022 + b"\r\n"
    chunk = line * 1024  # 1 MiB
    for _ in range(50):
        c.send(chunk)
    c.send(b".\r\n")
    qid = queue_id_of(c.reply(timeout=120))
    grown_mb = (vm_hwm_kb(r.pid) - before) / 1024.0
    print("peak RSS grew by %.1f MB for a 50 MB message" % grown_mb)
    assert grown_mb < 25, "peak RSS grew by %.1f MB while taking a 50 MB message" % grown_mb
    size = r.queue.query("SELECT length(b.data) AS n FROM message m JOIN message_body b ON b.message_id = m.id "
                         "WHERE m.queue_id = ?", (qid,))[0]["n"]
    ends = r.queue.query("SELECT substr(b.data, 1, 2000) AS head, substr(b.data, -2048) AS tail FROM message m "
                         "JOIN message_body b ON b.message_id = m.id WHERE m.queue_id = ?", (qid,))[0]
    hdr, rest = split_received(ends["head"])
    assert rest.startswith(b"Subject: fifty megabytes\r\n\r\nmmm")
    assert ends["tail"] == line * 2
    assert size == len(hdr) + len(b"Subject: fifty megabytes\r\n\r\n") + 50 * len(chunk)
