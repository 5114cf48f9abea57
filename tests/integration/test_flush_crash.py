# test_flush_crash: "a crash during a flush may deliver a message twice, never
# zero times". 800 small unique messages wait for a hold domain; ETRN starts
# the flush and relayd is SIGKILLed when the site has received a random part of
# them (seeded; the seed is printed); after a restart, ETRN is repeated until
# 251. Every message must have reached the site at least once, each copy with
# exactly the stored bytes, and nothing may be left in the queue.

import threading
import time

import pytest

from relayd_fixture import seeded_random
from sink import Client, etrn, etrn_until_drained, message, subject_of

N = 800
THREADS = 8


def queue_messages(r, n):
    """n unique messages over THREADS connections; returns {subject: queue id}."""
    ids = {}
    errors = []
    lock = threading.Lock()

    def worker(k):
        try:
            with Client(r, helo="c%d.test" % k) as c:
                for i in range(k, n, THREADS):
                    uid = "crash-%05d" % i
                    qid = c.send("s@sender.test", ["u%d@crash.test" % i], message(uid, to="u%d@crash.test" % i))
                    with lock:
                        ids[uid] = qid
        except Exception as e:  # reported below, in the test's thread
            with lock:
                errors.append("thread %d: %r" % (k, e))

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert not any(t.is_alive() for t in threads), "submission threads hung"
    assert not errors, errors[:3]
    return ids


@pytest.mark.time_limit(400)
def test_sigkill_during_a_flush_delivers_everything_at_least_once(denv):
    rng, seed = seeded_random("test_flush_crash")
    site = denv.sink("site")
    r = denv.relayd(domains={"crash.test": {"mode": "hold", "route": "127.0.0.1:%d" % site.port}},
                    etrn_rate="100000/1m")
    t0 = time.monotonic()
    ids = queue_messages(r, N)
    assert len(ids) == N
    stored = r.queue.all_bodies()
    assert len(stored) == N
    print("queued %d messages in %.1fs" % (N, time.monotonic() - t0))

    kill_at = rng.randrange(N // 10, N * 9 // 10)
    assert etrn(r, "crash.test") == (253, "2.0.0 %d pending messages for node <crash.test> started" % N)
    site.wait_for(kill_at, 120, "the flush to reach the kill point")
    r.kill9()
    at_kill = site.count()
    print("SIGKILL with %d of %d received by the site (aimed at %d)" % (at_kill, N, kill_at))

    r.restart()
    assert r.queue.integrity() == {"integrity_check": "ok"}
    left = r.queue.count()
    print("after the restart %d messages are queued" % left)
    code, text = etrn(r, "crash.test")
    assert code in (251, 253), (code, text)
    etrn_until_drained(r, "crash.test", 120, interval=0.25)
    assert r.queue.count() == 0, "mail left in the queue after 251"

    got = site.received()
    seen = {}
    for t in got:
        uid = subject_of(t.data)
        assert uid in ids, "unknown message at the site: %r" % t.data[:200]
        assert t.data == stored[ids[uid]], "%s arrived with other bytes than stored" % uid
        seen[uid] = seen.get(uid, 0) + 1
    missing = sorted(set(ids) - set(seen))
    assert not missing, "%d messages never arrived (seed %d), e.g. %s" % (len(missing), seed, missing[:5])
    dups = sum(v - 1 for v in seen.values())
    print("delivered %d copies of %d messages (%d duplicates) in %.1fs" % (len(got), N, dups, time.monotonic() - t0))
