# test_queue_lock: one relayd per queue. A second relayd started on the same
# database (its own port and control socket) must exit 75 before it listens,
# naming the database and the pid of the relayd that holds it, whether the
# first one runs as root or dropped to another user; the first keeps taking
# mail, and the readers (etrnctl through the control socket, sqlite3
# -readonly) still read. Once the first is gone, killed or stopped, the
# queue is free again.

import os
import pwd
import subprocess

import pytest

from relayd_fixture import Relayd, make_message, queue_id_of, run_to_exit
from test_etrnctl import etrnctl_binary

EX_TEMPFAIL = 75


def second_relayd(workdir, db, user):
    """Run a second relayd on db to its end; it must exit by itself (bounded)."""
    r = Relayd(workdir, database=db, user=user)
    rc, out = run_to_exit(r)
    assert rc is not None, "a second relayd on %s kept running:\n%s" % (db, out)
    return rc, out, r


def send_one(r, subject):
    c = r.raw()
    c.ehlo()
    q = queue_id_of(c.send_message("a@b.test", ["u@example.org"], make_message(subject=subject)))
    c.expect("QUIT", 221)
    return q


@pytest.mark.parametrize("user", [None, "nobody"])
def test_second_daemon_on_one_queue_exits_75(public_tmpdir, relayd_factory, user):
    qdir = os.path.join(public_tmpdir, "queue")
    db = os.path.join(qdir, "queue.db")
    if user:
        nobody = pwd.getpwnam(user)
        os.makedirs(qdir)
        os.chown(qdir, nobody.pw_uid, nobody.pw_gid)
    first = relayd_factory(workdir=os.path.join(public_tmpdir, "first"), database=db, user=user)
    q1 = send_one(first, "before the second")

    rc, out, second = second_relayd(os.path.join(public_tmpdir, "second"), db, user)
    assert rc == EX_TEMPFAIL, (rc, out)
    assert "queue %s is in use by another relayd (pid %d" % (db, first.pid) in out, out
    # it stopped before listening: its control socket was never made
    assert not os.path.exists(second.keys["control_socket"]), out

    # the first one is untouched: alive, takes mail, and its readers read
    assert first.alive()
    q2 = send_one(first, "after the second")
    env = dict(os.environ, ETRNCTL_SOCKET=first.keys["control_socket"])
    p = subprocess.run([etrnctl_binary(), "queue", "--ids-only"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=env, timeout=30)
    assert p.returncode == 0, p
    assert set(p.stdout.decode().split()) == {q1, q2}, p.stdout
    p = subprocess.run(["sqlite3", "-readonly", db, "SELECT queue_id FROM message ORDER BY id"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode().split() == [q1, q2], p.stdout

    # killed, the first leaves its lock file but not its lock
    first.kill9()
    first.start()
    assert first.queue.message(q1) is not None and first.queue.message(q2) is not None
    with open(db + ".lock") as f:
        assert f.read().strip() == str(first.pid)
    # stopped cleanly, the queue is free for another daemon
    assert first.stop() == 0
    other = relayd_factory(workdir=os.path.join(public_tmpdir, "third"), database=db, user=user)
    assert other.queue.count() == 2
