# test_spool: relayd(8) DATA, the spool directory <database>.spool/ beside the
# queue. A message past 128 KiB is written there while it arrives; the file
# is gone when the message is committed (before its 250 is sent) or has
# failed (the client went away), and files a crash left behind belong to
# messages that never got their 250 and are removed at the next start.

import os

from relayd_fixture import queue_id_of, wait_until

BIG = b"Subject: big\r\n\r\n" + (b"s" * 1022 + b"\r\n") * 400  # ~400 KiB


def spool_files(r):
    try:
        return sorted(os.listdir(r.db + ".spool"))
    except FileNotFoundError:
        return []


def half_sent(r):
    """A session in the middle of a big message, its spool file on disk."""
    c = r.raw(timeout=30)
    c.ehlo()
    c.expect("MAIL FROM:<a@b.test>", 250)
    c.expect("RCPT TO:<u@example.org>", 250)
    c.expect("DATA", 354)
    c.send(BIG)
    wait_until(lambda: spool_files(r), 30, what="a spool file for the big message")
    return c


def test_spool_file_removed_once_committed(relayd):
    c = half_sent(relayd)
    assert len(spool_files(relayd)) == 1
    c.send(b".\r\n")
    qid = queue_id_of(c.reply(timeout=30))
    # removed before the 250 went out
    assert spool_files(relayd) == []
    assert relayd.queue.message(qid)["body"].endswith(BIG)


def test_spool_file_removed_when_the_client_goes_away(relayd):
    c = half_sent(relayd)
    port = c.sock.getsockname()[1]
    c.abort()
    relayd.wait_log(r"lost connection after DATA \(\d+ bytes\) from unknown\[127\.0\.0\.1\]:%d" % port, timeout=30)
    wait_until(lambda: spool_files(relayd) == [], 30, what="the spool file to be removed")
    assert relayd.queue.count() == 0


def test_spool_files_left_by_a_crash_removed_at_start(relayd):
    half_sent(relayd)
    left = spool_files(relayd)
    relayd.kill9()
    assert spool_files(relayd) == left and len(left) == 1
    relayd.start()
    assert spool_files(relayd) == []
    assert relayd.queue.count() == 0
