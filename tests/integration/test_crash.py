# test_crash: "a 250 means the message is on disk". 20 client threads send
# messages while relayd is SIGKILLed at random moments (seeded; the seed is
# printed) and restarted; clients treat any error as "not acknowledged" and go
# on with the next message. After each round every acknowledged message must
# be in the queue with exactly the bytes sent, and the database must be sound.

import hashlib
import smtplib
import socket
import threading
import time

import pytest

from relayd_fixture import queue_id_of, seeded_random, split_received

THREADS = 20
PER_ROUND = 800
ROUNDS = 5
DOMAINS = ["example.org", "d1.test", "d2.test", "d3.test", "x.sub.test"]
ROUND_LIMIT = 120  # seconds per round


class Load:
    """Shared state of the client threads in one round."""

    def __init__(self, port, rng_seed, round_no):
        self.port = port
        self.seed = rng_seed
        self.round = round_no
        self.lock = threading.Lock()
        self.acked = {}  # queue id -> (uid, sha256 of the message, recipients)
        self.uids_acked = set()
        self.next_uid = 0
        self.attempts = 0
        self.failures = 0
        self.stop = threading.Event()
        self.errors = []

    def take_uid(self):
        with self.lock:
            self.next_uid += 1
            self.attempts += 1
            return "r%d-m%06d" % (self.round, self.next_uid)

    def n_acked(self):
        with self.lock:
            return len(self.acked)


def client(load, idx):
    import random

    rng = random.Random(load.seed * 1000 + load.round * 100 + idx)
    s = None
    while not load.stop.is_set() and load.n_acked() < PER_ROUND:
        uid = load.take_uid()
        rcpts = ["%s-%d@%s" % (uid, k, rng.choice(DOMAINS)) for k in range(rng.randrange(1, 4))]
        lines = ["line %d of %s %s" % (k, uid, "p" * rng.randrange(0, 200)) for k in range(rng.randrange(1, 40))]
        if rng.random() < 0.2:
            lines.insert(0, ".dot line in " + uid)
        msg = ("From: c%d@b.test\r\nTo: %s\r\nSubject: %s\r\nMessage-Id: <%s@b.test>\r\n\r\n%s\r\n"
               % (idx, rcpts[0], uid, uid, "\r\n".join(lines))).encode()
        try:
            if s is None:
                s = smtplib.SMTP("127.0.0.1", load.port, local_hostname="c%d.test" % idx, timeout=10)
                s.ehlo()
            code, _ = s.mail("c%d@b.test" % idx)
            if code != 250:
                raise smtplib.SMTPException("MAIL %d" % code)
            for rc in rcpts:
                code, _ = s.rcpt(rc)
                if code != 250:
                    raise smtplib.SMTPException("RCPT %d" % code)
            code, text = s.data(msg)
            if code != 250:
                raise smtplib.SMTPException("DATA %d" % code)
            qid = queue_id_of("%d %s" % (code, text.decode()))
            with load.lock:
                if qid in load.acked:
                    load.errors.append("queue id %s acknowledged twice" % qid)
                load.acked[qid] = (uid, hashlib.sha256(msg).hexdigest(), rcpts)
        except (smtplib.SMTPException, OSError, socket.timeout, EOFError):
            with load.lock:
                load.failures += 1
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass
            s = None
            time.sleep(0.05)  # the daemon may be restarting
        except AssertionError as e:
            with load.lock:
                load.errors.append("thread %d: %s" % (idx, e))
            load.stop.set()
    if s is not None:
        try:
            s.quit()
        except (smtplib.SMTPException, OSError):
            pass


def check_queue(relayd, acked_all):
    """Every acknowledged message is there, intact; no uid is stored twice."""
    assert relayd.queue.integrity() == {"integrity_check": "ok"}
    bodies = relayd.queue.all_bodies()
    missing = [q for q in acked_all if q not in bodies]
    assert not missing, "%d acknowledged messages lost, e.g. %s" % (len(missing), missing[:5])
    rows = relayd.queue.query("SELECT m.queue_id AS q, r.address AS a FROM message m JOIN recipient r "
                              "ON r.message_id = m.id")
    rcpts = {}
    for row in rows:
        rcpts.setdefault(row["q"], []).append(row["a"])
    for qid, (uid, digest, want_rcpts) in acked_all.items():
        hdr, rest = split_received(bodies[qid])
        assert hashlib.sha256(rest).hexdigest() == digest, "message %s (%s) corrupted" % (qid, uid)
        assert sorted(rcpts.get(qid, [])) == sorted(want_rcpts), (qid, rcpts.get(qid), want_rcpts)
    # a message whose 250 was lost in a kill may be there, but never twice
    seen = {}
    for qid, body in bodies.items():
        subj = [l for l in body.split(b"\r\n") if l.startswith(b"Subject: ")]
        if subj:
            seen.setdefault(subj[0], []).append(qid)
    dups = {k: v for k, v in seen.items() if len(v) > 1}
    assert not dups, "messages stored twice: %r" % list(dups.items())[:3]


@pytest.mark.time_limit(ROUNDS * ROUND_LIMIT + 60)
def test_sigkill_under_load_loses_nothing(relayd_factory):
    rng, seed = seeded_random("test_sigkill_under_load_loses_nothing")
    r = relayd_factory(domains={"example.org": {"mode": "hold"}, "d1.test": {}, "d2.test": {"mode": "retry", "route": "127.0.0.1:9"},
                                "d3.test": {}, "sub.test": {"subdomains": "yes"}})
    acked_all = {}
    kills_total = 0
    for rnd in range(ROUNDS):
        load = Load(r.port, seed, rnd)
        kill_points = sorted(rng.sample(range(100, PER_ROUND - 100), 2))
        threads = [threading.Thread(target=client, args=(load, i), daemon=True) for i in range(THREADS)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        try:
            for point in kill_points:
                while load.n_acked() < point and time.monotonic() - t0 < ROUND_LIMIT and not load.stop.is_set():
                    time.sleep(0.005)
                time.sleep(rng.uniform(0, 0.05))
                r.kill9()
                kills_total += 1
                print("round %d: SIGKILL at %d acknowledged" % (rnd, load.n_acked()))
                r.restart()
            while load.n_acked() < PER_ROUND and time.monotonic() - t0 < ROUND_LIMIT and not load.stop.is_set():
                time.sleep(0.05)
        finally:
            load.stop.set()
            for t in threads:
                t.join(30)
        assert not any(t.is_alive() for t in threads), "client threads hung"
        assert not load.errors, load.errors[:5]
        n = load.n_acked()
        elapsed = time.monotonic() - t0
        print("round %d: %d acknowledged of %d attempts, %d failures, %.1fs" %
              (rnd, n, load.attempts, load.failures, elapsed))
        assert n >= PER_ROUND, "only %d of %d messages acknowledged in %ds (%d failures)" % (
            n, PER_ROUND, ROUND_LIMIT, load.failures)
        overlap = set(acked_all) & set(load.acked)
        assert not overlap, "queue ids reused across restarts: %s" % sorted(overlap)[:5]
        acked_all.update(load.acked)
        # one more kill with the load stopped, so the check sees what the disk holds
        r.kill9()
        r.restart()
        check_queue(r, acked_all)
    assert kills_total == 2 * ROUNDS
