# test_exit_status: the start-up failures relayd(8) EXIT STATUS gives an
# operator (and systemd's RestartPreventExitStatus) to act on, once each with
# the real cause: 70 for a queue that is damaged or from a newer relayd, 71
# for an address it cannot bind, 77 for privileges it cannot drop. (73 is in
# test_safe_files.py, 75 in test_queue_lock.py, 67 and 78 in test_cli.py.)
# Every case must end by itself, before listening.

import os
import socket
import sqlite3
import subprocess

from relayd_fixture import Relayd, free_port, relayd_binary, run_to_exit

EX_SOFTWARE, EX_OSERR, EX_NOPERM = 70, 71, 77


def start_must_fail(tmp_path, name, **keys):
    r = Relayd(str(tmp_path / name), **keys)
    rc, out = run_to_exit(r)
    assert rc is not None, "relayd kept running:\n" + out
    assert "relayd ready" not in out, out
    return rc, out, r


def test_damaged_queue_exits_70(tmp_path):
    qdir = tmp_path / "damaged" / "queue"
    qdir.mkdir(parents=True)
    (qdir / "queue.db").write_bytes(b"this is not an SQLite database\n" * 200)
    rc, out, r = start_must_fail(tmp_path, "damaged")
    assert rc == EX_SOFTWARE, (rc, out)
    assert "cannot open the queue %s: " % r.db in out, out
    # nothing was written over it
    assert (qdir / "queue.db").read_bytes() == b"this is not an SQLite database\n" * 200


def test_queue_from_a_newer_relayd_exits_70(tmp_path):
    qdir = tmp_path / "newer" / "queue"
    qdir.mkdir(parents=True)
    db = sqlite3.connect(str(qdir / "queue.db"))
    db.execute("CREATE TABLE future (x)")
    db.execute("PRAGMA user_version = 999")
    db.commit()
    db.close()
    rc, out, r = start_must_fail(tmp_path, "newer")
    assert rc == EX_SOFTWARE, (rc, out)
    assert "cannot open the queue %s: " % r.db in out and "999" in out, out


def test_address_in_use_exits_71(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        rc, out, r = start_must_fail(tmp_path, "inuse", port=port)
    assert rc == EX_OSERR, (rc, out)
    assert "127.0.0.1:%d" % port in out and "address already in use" in out.lower(), out
    # it stopped before opening the queue
    assert not os.path.exists(r.db), out


def test_privileges_that_cannot_be_dropped_exit_77(tmp_path, public_tmpdir):
    assert os.geteuid() == 0, "needs root: relayd drops privileges only as root"
    # root without CAP_SETUID and CAP_SETGID (bounding set, for relayd only)
    r = Relayd(os.path.join(public_tmpdir, "noperm"), port=free_port(), user="nobody")
    r.write_config()
    p = subprocess.run(["setpriv", "--bounding-set", "-setuid,-setgid", relayd_binary(), "-d", "-f", r.conf],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       cwd=r.dir, env=r.env, timeout=30)
    out = p.stdout.decode("utf-8", "replace")
    assert p.returncode == EX_NOPERM, (p.returncode, out)
    assert "cannot switch to user nobody: Operation not permitted" in out, out
    assert "relayd ready" not in out, out

