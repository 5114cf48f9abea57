# test_durability: "a 250 means the message is on disk" (relayd(8), DATA),
# checked from inside the process. The crash tests kill -9 relayd, which
# keeps the page cache, so a build with synchronous=OFF or one that answers
# before its commit passes them. Here relayd runs with syncspy.so preloaded
# (built by `make check`), which logs in one order: the message's bytes
# reaching the queue's files, every fsync/fdatasync (start and end) and every
# "250 ... queued as" leaving on a socket. For each message the test demands
# write -> sync start -> sync end -> 250 on the same file, and that the
# writer connection reports synchronous=FULL and WAL when relayd closes it.

import os
import secrets
import threading

from relayd_fixture import queue_id_of, relayd_binary

SYNC_FULL = "2"  # what PRAGMA synchronous reports for FULL


def syncspy_path():
    builddir = os.environ.get("top_builddir") or os.path.join(os.path.dirname(relayd_binary()), "..")
    return os.path.abspath(os.path.join(builddir, "tests", "integration", "syncspy.so"))


def spied_env(log):
    spy = syncspy_path()
    assert os.path.exists(spy), "%s missing: `make check` builds it" % spy
    # a sanitizer build wants its runtime first among the preloads; the shim
    # only passes calls on, so the order does not matter to it
    asan = os.environ.get("ASAN_OPTIONS", "")
    return {"LD_PRELOAD": spy, "SYNCSPY_LOG": log,
            "ASAN_OPTIONS": (asan + ":" if asan else "") + "verify_asan_link_order=0"}


def parse(log):
    """[(seq, tid, kind, fields)] in sequence order."""
    events = []
    with open(log) as f:
        for line in f:
            seq, tid, kind, *fields = line.split()
            events.append((int(seq), int(tid), kind, fields))
    events.sort()
    return events


def check_durable(events, token, qid, db):
    """The 250 for qid was written after an fsync/fdatasync of the queue's
    database or WAL that started after token's bytes were written to that
    same file, and ended successfully."""
    files = (db, db + "-wal")
    replies = [e[0] for e in events if e[2] == "R" and e[3] == [qid]]
    assert len(replies) == 1, "250 for %s sent %d times" % (qid, len(replies))
    reply = replies[0]
    writes = [(e[0], e[3][1]) for e in events if e[2] == "W" and e[3][0] == token and e[3][1] in files]
    assert writes, "message %s (%s) never written to %s" % (qid, token, files)
    first_write = min(s for s, _ in writes)
    assert first_write < reply, "250 for %s before its bytes reached the queue" % qid
    for seq, tid, kind, f in events:
        if kind != "S+" or f[1] not in files or seq < first_write:
            continue
        if not any(s < seq and p == f[1] for s, p in writes):
            continue
        end = next((e for e in events if e[0] > seq and e[1] == tid and e[2] == "S-"), None)
        assert end is not None and end[3][1] == f[1], "sync of %s never ended" % f[1]
        if end[3][2] == "0" and end[0] < reply:
            return
    syncs = [e for e in events if e[2] in ("S+", "S-")]
    raise AssertionError("250 for %s (seq %d, written at seq %d) not preceded by a completed sync of %s "
                         "after the write; syncs: %r" % (qid, reply, first_write, files, syncs[:20]))


def send(r, tokens, out, errors):
    try:
        c = r.raw(timeout=30)
        c.ehlo()
        for t in tokens:
            body = ("Subject: %s\r\n\r\nsyncmark-%s\r\n" % (t, t)).encode()
            out[t] = queue_id_of(c.send_message("a@b.test", ["u@example.org"], body, timeout=30))
        c.cmd("QUIT")
    except Exception as e:  # reported by the main thread
        errors.append(e)


def test_every_250_follows_the_fsync_of_its_message(relayd_factory, tmp_path):
    log = str(tmp_path / "syncspy.log")
    r = relayd_factory(env=spied_env(log))
    base = secrets.token_hex(6)
    # two sessions at once, so some commits hold more than one message
    tokens = [["%sa%d" % (base, i) for i in range(4)], ["%sb%d" % (base, i) for i in range(4)]]
    qids, errors = {}, []
    threads = [threading.Thread(target=send, args=(r, ts, qids, errors)) for ts in tokens]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(qids) == 8, qids
    assert r.stop() == 0
    events = parse(log)
    opened = [e[3][0] for e in events if e[2] == "O"]
    assert opened == [r.db], opened
    for token, qid in sorted(qids.items()):
        check_durable(events, token, qid, r.db)
    # the writer connection as SQLite itself reports it when relayd closes it
    (pragmas,) = [e[3] for e in events if e[2] == "P"]
    assert pragmas == ["synchronous=" + SYNC_FULL, "journal_mode=wal"], pragmas
