# test_safe_files: what relayd does to the file system while it is root.
# Whoever controls relayd's user can write in the queue's directory; relayd
# started as root must never follow a symbolic link planted there, never
# chown or empty a directory that is not its own, and must refuse to start
# (exit 73) instead of repairing. Whatever it creates (the queue, its -wal
# and -shm, the spool, the lock) grants nothing to other users, whatever
# umask it was started with.

import os
import pwd
import stat

import pytest

from relayd_fixture import Relayd, make_message, queue_id_of, run_relayd, run_to_exit

EX_CANTCREAT = 73
NOBODY = pwd.getpwnam("nobody")
OTHER = pwd.getpwnam("daemon")  # "someone else": neither root nor relayd's user


def victim_dir(base):
    """A directory that is not relayd's, with an entry that must survive."""
    v = os.path.join(base, "victim")
    os.makedirs(v)
    os.chmod(v, 0o755)
    with open(os.path.join(v, "keep"), "w") as f:
        f.write("not relayd's\n")
    return v


def assert_untouched(v, owner):
    st = os.stat(v)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (owner.pw_uid, owner.pw_gid, 0o755), st
    assert sorted(os.listdir(v)) == ["keep"], os.listdir(v)
    assert os.stat(os.path.join(v, "keep")).st_uid == owner.pw_uid


def refused(public_tmpdir, db, user):
    """Start relayd (it must end by itself); then relayd -t on the same
    configuration must fail the same way, as it checks what a start needs."""
    r = Relayd(os.path.join(public_tmpdir, "work"), database=db, user=user)
    rc, out = run_to_exit(r)
    t = run_relayd(["-t", "-f", r.conf])
    assert t.returncode == EX_CANTCREAT, (t.returncode, t.stdout, t.stderr)
    return rc, out, r


@pytest.mark.parametrize("user", [None, "nobody"])
def test_spool_symlink_is_refused_and_its_target_untouched(public_tmpdir, user):
    owner = pwd.getpwnam("root")
    v = victim_dir(public_tmpdir)
    qdir = os.path.join(public_tmpdir, "queue")
    os.makedirs(qdir, mode=0o750)
    if user:
        os.chown(qdir, NOBODY.pw_uid, NOBODY.pw_gid)
    db = os.path.join(qdir, "queue.db")
    os.symlink(v, db + ".spool")
    rc, out, r = refused(public_tmpdir, db, user)
    assert_untouched(v, owner)
    assert rc == EX_CANTCREAT, (rc, out)
    assert "spool directory %s.spool is a symbolic link" % db in out, out
    assert "relayd ready" not in out, out


def test_spool_owned_by_someone_else_is_refused(public_tmpdir):
    qdir = os.path.join(public_tmpdir, "queue")
    os.makedirs(qdir, mode=0o750)
    os.chown(qdir, NOBODY.pw_uid, NOBODY.pw_gid)
    db = os.path.join(qdir, "queue.db")
    spool = db + ".spool"
    os.makedirs(spool)
    os.chmod(spool, 0o755)
    with open(os.path.join(spool, "keep"), "w") as f:
        f.write("not relayd's\n")
    os.chown(os.path.join(spool, "keep"), OTHER.pw_uid, OTHER.pw_gid)
    os.chown(spool, OTHER.pw_uid, OTHER.pw_gid)
    rc, out, _ = refused(public_tmpdir, db, "nobody")
    assert os.listdir(spool) == ["keep"]
    st = os.stat(spool)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (OTHER.pw_uid, 0o755), st
    assert rc == EX_CANTCREAT, (rc, out)
    assert "spool directory %s belongs to uid %d" % (spool, OTHER.pw_uid) in out, out


@pytest.mark.parametrize("via_symlink", [True, False])
def test_database_directory_of_someone_else_is_not_taken(public_tmpdir, via_symlink):
    v = victim_dir(public_tmpdir)
    os.chown(v, OTHER.pw_uid, OTHER.pw_gid)
    os.chown(os.path.join(v, "keep"), OTHER.pw_uid, OTHER.pw_gid)
    qdir = v
    if via_symlink:
        qdir = os.path.join(public_tmpdir, "queue")
        os.symlink(v, qdir)
    db = os.path.join(qdir, "queue.db")
    rc, out, _ = refused(public_tmpdir, db, "nobody")
    assert_untouched(v, OTHER)  # not chowned, nothing created in it
    assert rc == EX_CANTCREAT, (rc, out)
    if via_symlink:
        assert "%s is a symbolic link or not a directory: refused" % qdir in out, out
    else:
        assert "%s belongs to uid %d" % (qdir, OTHER.pw_uid) in out, out


def mode_of(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.mark.parametrize("setup", ["fresh", "statedir", "old-queue", "root-made", "root"])
def test_queue_files_grant_nothing_to_others(public_tmpdir, relayd_factory, setup):
    """Started with umask 0: the queue, -wal, -shm, the spool and the lock
    still grant nothing to other users (and belong to relayd's user)."""
    user = None if setup == "root" else "nobody"
    owner = pwd.getpwnam(user or "root")
    qdir = os.path.join(public_tmpdir, "queue")
    db = os.path.join(qdir, "queue.db")
    if setup == "statedir":  # what systemd's StateDirectory= leaves without User=
        os.makedirs(qdir)
        os.chmod(qdir, 0o755)
    elif setup == "old-queue":  # a queue file from a run without relayd's umask
        os.makedirs(qdir)
        os.chown(qdir, NOBODY.pw_uid, NOBODY.pw_gid)
        open(db, "w").close()
        os.chmod(db, 0o644)
        os.chown(db, NOBODY.pw_uid, NOBODY.pw_gid)
    elif setup == "root-made":  # an earlier relayd ran as root, without `user`
        os.makedirs(qdir)
        os.chown(qdir, NOBODY.pw_uid, NOBODY.pw_gid)
        open(db, "w").close()
        os.chmod(db, 0o644)
        os.makedirs(db + ".spool", mode=0o700)
        open(os.path.join(db + ".spool", "STALE"), "w").close()
    old = os.umask(0)
    try:
        r = relayd_factory(workdir=os.path.join(public_tmpdir, "work"), database=db, user=user)
    finally:
        os.umask(old)
    c = r.raw()
    c.ehlo()
    big = make_message(subject="spooled", body_lines=["s" * 900] * 400)  # ~360 KB: goes to the spool
    q = queue_id_of(c.send_message("a@b.test", ["u@example.org"], big, timeout=30))
    c.expect("QUIT", 221)
    assert r.queue.message(q) is not None
    st = os.lstat(qdir)
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == owner.pw_uid, st
    for suffix in ("", "-wal", "-shm", ".lock"):
        p = db + suffix
        st = os.lstat(p)
        assert stat.S_ISREG(st.st_mode), p
        assert st.st_uid == owner.pw_uid, (p, st.st_uid)
        assert mode_of(p) & 0o007 == 0, "%s is mode %04o" % (p, mode_of(p))
    st = os.lstat(db + ".spool")
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == owner.pw_uid
    assert mode_of(db + ".spool") == 0o700
    assert os.listdir(db + ".spool") == []

