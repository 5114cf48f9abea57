# test_diskfull: the queue on a tiny tmpfs. When the disk fills, clients get
# 452 4.3.1 (never a 250 for something not stored), the daemon stays up, and
# after the operator frees space and restarts, the queue passes
# PRAGMA integrity_check and holds every message that got its 250.

import os
import subprocess

from relayd_fixture import make_message, queue_id_of, split_received


def test_disk_full_452_and_no_loss(relayd_factory, mounts, tmp_path):
    mnt = str(tmp_path / "smallfs")
    os.makedirs(mnt)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    assert p.returncode == 0, "cannot mount a tmpfs (needs root): %s" % p.stdout.decode(errors="replace")
    mounts.append(mnt)

    # queue_minfree = 0: no reserve, so this is the last line of defence, the
    # disk really filling (test_quota.py shows the reserve refusing first)
    r = relayd_factory(database=os.path.join(mnt, "q", "queue.db"), queue_minfree="0")
    acked = {}
    full_reply = None
    c = r.raw(timeout=30)
    c.ehlo()
    for i in range(200):
        msg = make_message(subject="fill %d" % i, body_lines=[("%04d " % i) + "f" * 990] * 30)  # ~30 KB
        c.expect("MAIL FROM:<a@b.test>", 250)
        c.expect("RCPT TO:<u%d@example.org>" % i, 250)
        c.expect("DATA", 354)
        c.send(msg + b".\r\n")
        rep = c.reply(timeout=30)
        if rep.code == 250:
            acked[queue_id_of(rep)] = msg
            continue
        full_reply = rep
        break
    assert full_reply is not None, "2 MB filesystem never filled after 200 x 30 KB"
    assert full_reply.line.startswith("452 4.3.1"), full_reply
    assert acked, "not a single message fit"

    # still alive and answering; a further message is refused the same way
    assert r.alive()
    c.expect("NOOP", 250)
    c.expect("RSET", 250)
    c.expect("MAIL FROM:<a@b.test>", 250)
    c.expect("RCPT TO:<u@example.org>", 250)
    c.expect("DATA", 354)
    c.send(make_message(subject="again", body_lines=["g" * 990] * 30) + b".\r\n")
    rep = c.reply(timeout=30)
    assert rep.code in (250, 452), rep
    if rep.code == 250:
        acked[queue_id_of(rep)] = None
    c2 = r.raw()
    c2.ehlo()
    c2.expect("QUIT", 221)
    c.expect("QUIT", 221)

    rc = r.stop()
    assert rc == 0, (rc, r.log_tail())
    # the operator makes room, then starts relayd again
    p = subprocess.run(["mount", "-o", "remount,size=64m", mnt], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=30)
    assert p.returncode == 0, p.stdout
    r.restart()
    assert r.queue.integrity() == {"integrity_check": "ok"}
    bodies = r.queue.all_bodies()
    for qid, msg in acked.items():
        assert qid in bodies, "message %s got 250 but is not in the queue" % qid
        if msg is not None:
            assert split_received(bodies[qid])[1] == msg, qid
    # and it accepts mail again
    c = r.raw()
    c.ehlo()
    queue_id_of(c.send_message("a@b.test", ["u@example.org"], make_message(subject="after")))
