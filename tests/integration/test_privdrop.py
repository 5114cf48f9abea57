# test_privdrop: started as root with `user = nobody`, relayd binds its port (a
# privileged one here, so binding must happen before the drop), opens the
# queue, then runs as nobody — and still queues mail, small and spooled.

import os
import pwd
import random
import socket

from relayd_fixture import make_message, queue_id_of, split_received


def privileged_free_port():
    ports = list(range(600, 1000))
    random.shuffle(ports)
    for p in ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                continue
            return p
    raise AssertionError("no free port below 1024")


def status_ids(pid):
    ids = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("Uid", "Gid", "Groups"):
                ids[k] = v.split()
    return ids


def test_drops_to_user_after_binding(public_tmpdir, relayd_factory):
    # public_tmpdir first: it must outlive the daemon (fixtures tear down in reverse)
    assert os.geteuid() == 0, "this test must run as root (it checks the privilege drop)"
    nobody = pwd.getpwnam("nobody")
    qdir = os.path.join(public_tmpdir, "queue")
    os.makedirs(qdir)
    os.chown(qdir, nobody.pw_uid, nobody.pw_gid)
    port = privileged_free_port()
    r = relayd_factory(workdir=os.path.join(public_tmpdir, "work"), user="nobody", port=port,
                       database=os.path.join(qdir, "queue.db"))
    ids = status_ids(r.pid)
    assert ids["Uid"] == [str(nobody.pw_uid)] * 4, ids
    assert ids["Gid"] == [str(nobody.pw_gid)] * 4, ids
    assert ids.get("Groups", []) in ([], [str(nobody.pw_gid)]), "supplementary groups kept: %r" % ids
    c = r.raw()
    c.ehlo()
    small = make_message(subject="as nobody")
    q1 = queue_id_of(c.send_message("a@b.test", ["u@example.org"], small))
    big = make_message(subject="big as nobody", body_lines=["b" * 900] * 3000)  # ~2.7 MB: spooled
    q2 = queue_id_of(c.send_message("a@b.test", ["u@example.org"], big, timeout=60))
    c.expect("QUIT", 221)
    assert split_received(r.queue.message(q1)["body"])[1] == small
    assert split_received(r.queue.message(q2)["body"])[1] == big
    # still nobody after doing work (no helper kept root)
    assert status_ids(r.pid)["Uid"] == [str(nobody.pw_uid)] * 4
