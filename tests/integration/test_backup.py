# test_backup: `etrnctl backup FILE` and relayd(8) BACKUP. relayd copies the
# queue online (SQLite's backup API, one snapshot) and streams it over the
# control socket while mail keeps coming in and going out; etrnctl writes
# FILE itself (0600, never over an existing file without --force) and
# checks it. The copy opens with Python's sqlite3, passes integrity_check and
# holds every message acknowledged before the backup began; the documented
# restore brings relayd up on it and it delivers that mail. Only root and
# relayd's user may take one.

import base64
import json
import os
import pwd
import shutil
import socket
import sqlite3
import stat
import subprocess
import tempfile
import threading

from relayd_fixture import SANITIZER_MARKERS, wait_until
from sink import Client, etrn, message, subject_of

SENDER = "s@sender.test"
NOBODY = pwd.getpwnam("nobody").pw_uid
NOGROUP = pwd.getpwnam("nobody").pw_gid
EX_DATAERR, EX_CANTCREAT, EX_NOPERM = 65, 73, 77


def etrnctl_binary():
    path = os.environ.get("ETRNCTL")
    if not path:
        builddir = os.environ.get("top_builddir")
        here = os.path.dirname(os.path.abspath(__file__))
        path = os.path.join(builddir, "etrnctl", "etrnctl") if builddir else \
            os.path.join(here, "..", "..", "etrnctl", "etrnctl")
    return os.path.abspath(path)


_copies = {}


def reachable_copy(path):
    """A copy of path that nobody can execute, for a build tree under a
    directory nobody may enter (a clone in a 0700 mktemp directory)."""
    if path not in _copies:
        d = tempfile.mkdtemp(prefix="relayd-etrnctl-", dir="/tmp")
        os.chmod(d, 0o755)
        _copies[path] = shutil.copy(path, os.path.join(d, "etrnctl"))
        os.chmod(_copies[path], 0o755)
    return _copies[path]

def etrnctl(r, *args, user=None):
    def drop():
        os.setgroups([])
        os.setgid(NOGROUP)
        os.setuid(NOBODY)

    binary = etrnctl_binary()
    if user == "nobody":
        binary = reachable_copy(binary)
    p = subprocess.run([binary, "-S", r.keys["control_socket"]] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120,
                       preexec_fn=drop if user == "nobody" else None)
    assert not any(m.encode() in p.stderr for m in SANITIZER_MARKERS), p.stderr.decode()
    return p


class Sender(threading.Thread):
    """Keeps submitting small messages until stopped; acked is the list of
    queue ids relayd answered 250 for, in order; errors what went wrong."""

    def __init__(self, r):
        super().__init__(daemon=True)
        self.r = r
        self.stop = threading.Event()
        self.acked = []
        self.errors = []
        self.lock = threading.Lock()

    def run(self):
        try:
            with Client(self.r) as c:
                n = 0
                while not self.stop.is_set() and n < 5000:
                    q = c.send(SENDER, ["live@example.org"], message("live-%d" % n))
                    with self.lock:
                        self.acked.append(q)
                    n += 1
        except Exception as e:  # reported by the test
            self.errors.append(repr(e))

    def count(self):
        with self.lock:
            return len(self.acked)

    def finish(self):
        self.stop.set()
        self.join(60)
        assert not self.is_alive() and self.errors == [], self.errors


def relay_setup(denv, **keys):
    site = denv.sink("site")
    r = denv.relayd(domains={"example.org": {"mode": "hold", "route": "127.0.0.1:%d" % site.port}}, **keys)
    return r, site


def fill(r, n, size):
    """n messages of about size bytes each, acknowledged: their queue ids."""
    line = "x" * 998
    with Client(r) as c:
        return [c.send(SENDER, ["a%d@example.org" % i], message("before-%d" % i, lines=[line] * (size // 1000)))
                for i in range(n)]


def queue_ids(path):
    db = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        return {row[0] for row in db.execute("SELECT queue_id FROM message")}
    finally:
        db.close()


def test_mail_flows_while_a_backup_is_taken(denv, tmp_path):
    r, site = relay_setup(denv)
    before = fill(r, 24, 400000)  # ~10 MB: the copy takes several steps
    sender = Sender(r)
    sender.start()
    wait_until(lambda: sender.count() >= 3, 20, what="the sender under way")
    off = r.log_size()
    # a control client that reads the first record, then stops reading: the
    # backup is under way (relayd waits to write the rest) while we watch
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(60)
    s.connect(r.keys["control_socket"])
    s.sendall(b"backup\n")
    buf = b""
    while b"\n" not in buf:
        chunk = s.recv(4096)
        assert chunk, "relayd closed the control connection"
        buf += chunk
    first = json.loads(buf.split(b"\n", 1)[0])
    size = first["backup_size"]
    assert size > 8000000, first
    r.wait_log(r"control: backup by uid 0 \(pid \d+\) started", since=off, timeout=10)
    # intake goes on: more 250s while the backup runs
    n = sender.count()
    wait_until(lambda: sender.count() >= n + 10, 30, what="250s during the backup")
    # and delivery: an ETRN moves the mail to the site
    assert etrn(r, "example.org")[0] == 253
    site.wait_for(len(before), 60, "the earlier mail delivered during the backup")
    # the backup was still open all along (positive marker: it ends below)
    assert r.log_lines(r"control: backup by uid 0: \d+ bytes sent", since=off) == []
    while True:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        buf += chunk
    s.close()
    sender.finish()
    lines = buf.rstrip(b"\n").split(b"\n")
    assert json.loads(lines[-1]) == {"ok": True}
    data = b""
    for line in lines[1:-1]:
        rec = json.loads(line)
        assert rec["offset"] == len(data)
        data += base64.b64decode(rec["data"], validate=True)
    assert len(data) == size
    r.wait_log(r"control: backup by uid 0: %d bytes sent" % size, since=off, timeout=10)
    copy = tmp_path / "stream.db"
    copy.write_bytes(data)
    ids = queue_ids(str(copy))
    assert set(before) <= ids, "the copy lacks mail acknowledged before the backup"


def test_etrnctl_backup_and_restore(denv, tmp_path):
    r, site = relay_setup(denv)
    before = fill(r, 20, 20000)
    sender = Sender(r)
    sender.start()
    wait_until(lambda: sender.count() >= 3, 20, what="the sender under way")
    acked_before = list(sender.acked)
    out = tmp_path / "queue-backup.db"
    p = etrnctl(r, "backup", str(out))
    assert p.returncode == 0, p.stderr
    assert b"a whole SQLite database" in p.stdout, p.stdout
    n = sender.count()
    wait_until(lambda: sender.count() >= n + 3, 30, what="250s after the backup")
    sender.finish()
    st = os.stat(out)
    assert stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
    assert [f for f in os.listdir(tmp_path) if ".tmp" in f] == [], "a temporary file was left"
    ids = queue_ids(str(out))
    assert set(before) | set(acked_before) <= ids

    # never over an existing file without --force; with it, replaced
    out.write_bytes(b"precious")
    p = etrnctl(r, "backup", str(out))
    assert p.returncode == EX_CANTCREAT and b"--force" in p.stderr, (p.returncode, p.stderr)
    assert out.read_bytes() == b"precious"
    p = etrnctl(r, "backup", "--force", str(out))
    assert p.returncode == 0, p.stderr
    ids = queue_ids(str(out))
    assert set(before) <= ids

    # the restore of relayd(8) BACKUP: stop, copy into place, no stale
    # -wal/-shm, start; the restored queue is delivered
    r.stop()
    db = r.keys["database"]
    shutil.copyfile(out, db)
    for suffix in ("-wal", "-shm"):
        if os.path.exists(db + suffix):
            os.unlink(db + suffix)
    os.chmod(db, 0o600)
    r.start()
    assert {m["queue_id"] for m in r.queue.messages()} == ids
    assert etrn(r, "example.org")[0] == 253
    got = site.wait_for(len(ids), 60, "the restored queue delivered")
    subjects = {subject_of(t.data) for t in got}
    assert {"before-%d" % i for i in range(20)} <= subjects


def test_backup_refused_to_others(denv, public_tmpdir):
    # a socket nobody may reach, in a directory nobody may write
    r, _ = relay_setup(denv, control_socket=os.path.join(public_tmpdir, "ctl.sock"),
                       control_socket_mode="0666")
    fill(r, 1, 1000)
    os.chmod(public_tmpdir, 0o777)
    out = os.path.join(public_tmpdir, "theirs.db")
    off = r.log_size()
    p = etrnctl(r, "backup", out, user="nobody")
    assert p.returncode == EX_NOPERM, (p.returncode, p.stderr)
    assert b"backup is for root and the relayd user only" in p.stderr, p.stderr
    assert not os.path.exists(out) and os.listdir(public_tmpdir) == ["ctl.sock"]
    r.wait_log(r"control: backup refused to uid %d" % NOBODY, since=off, timeout=10)
    # the same user may read the queue: the refusal is backup's own
    p = etrnctl(r, "queue", user="nobody")
    assert p.returncode == 0, p.stderr


def test_a_client_that_leaves_mid_backup(denv):
    r, _ = relay_setup(denv)
    before = fill(r, 8, 400000)
    off = r.log_size()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(60)
    s.connect(r.keys["control_socket"])
    s.sendall(b"backup\n")
    assert s.recv(64), "no answer to backup"
    s.close()  # gone with most of the copy unread
    r.wait_log(r"control: backup by uid 0 \(pid \d+\) started", since=off, timeout=10)
    # relayd goes on, the copy is not left beside the queue, and a new backup works
    d = os.path.dirname(r.keys["database"])
    wait_until(lambda: not [f for f in os.listdir(d) if ".backup-" in f], 20, what="the copy removed")
    assert r.log_lines(r"bytes sent", since=off) == []
    p = etrnctl(r, "backup", os.path.join(d, "again.db"))
    assert p.returncode == 0, p.stderr
    assert set(before) <= queue_ids(os.path.join(d, "again.db"))
