# test_etrnctl: the etrnctl program as users run it. Site side: `etrnctl etrn`
# against the real relayd (every reply and its exit status, --wait watching
# the count fall while a slow site takes the mail, several domains where the
# first has nothing waiting), against a real Postfix configured for ETRN (its
# bare 250), against tiny scripted SMTP servers (no ETRN offered, odd replies,
# --all-mx with dnsmasq serving the MX hosts, the lock), against a port where
# nothing listens (75, --retry). Operator side: every control-socket command
# against a relayd with a known queue, in text and --json.

import json
import os
import re
import shutil
import pwd
import socket
import subprocess
import threading
import time

import pytest

from relayd_fixture import free_port, wait_until
from sink import Client, message, subject_of

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")

EX_USAGE, EX_NOINPUT, EX_UNAVAILABLE, EX_SOFTWARE = 64, 66, 69, 70
EX_TEMPFAIL, EX_PROTOCOL, EX_NOPERM, EX_CONFIG = 75, 76, 77, 78


def etrnctl_binary():
    path = os.environ.get("ETRNCTL")
    if not path:
        builddir = os.environ.get("top_builddir")
        here = os.path.dirname(os.path.abspath(__file__))
        path = os.path.join(builddir, "etrnctl", "etrnctl") if builddir else \
            os.path.join(here, "..", "..", "etrnctl", "etrnctl")
    return os.path.abspath(path)


@pytest.fixture(scope="session")
def etrnctl_path():
    path = etrnctl_binary()
    assert os.access(path, os.X_OK), "etrnctl binary not found at %s (set ETRNCTL)" % path
    return path


class Etrnctl:
    """Runs etrnctl with a private lock dir and defaults file; every run is
    checked for sanitizer reports."""

    def __init__(self, path, tmp):
        self.path = path
        self.tmp = tmp
        self.lockdir = str(tmp / "locks")
        os.makedirs(self.lockdir, exist_ok=True)
        self.defaults = str(tmp / "etrnctl.defaults")
        with open(self.defaults, "w") as f:
            f.write("# empty: tests give relays and domains on the command line\n")
        self.socket = None

    def env(self, extra=None):
        env = dict(os.environ)
        env.update({"ETRNCTL_DEFAULTS": self.defaults, "ETRNCTL_LOCK_DIR": self.lockdir})
        env.pop("ETRNCTL_SOCKET", None)
        if self.socket:
            env["ETRNCTL_SOCKET"] = self.socket
        env.update(extra or {})
        return env

    def popen(self, args, env=None, **kw):
        return subprocess.Popen([self.path] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=kw.pop("stdin", subprocess.DEVNULL), env=self.env(env), **kw)

    def run(self, *args, env=None, input=None, timeout=60, user=None):
        kw = {}
        if user is not None:
            uid, gid = user

            def drop():
                os.setgroups([])
                os.setgid(gid)
                os.setuid(uid)

            kw["preexec_fn"] = drop
        t0 = time.monotonic()
        p = subprocess.run([self.path] + list(args), input=input.encode() if input is not None else None,
                           stdin=None if input is not None else subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env(env),
                           timeout=timeout, **kw)
        res = Result(p, time.monotonic() - t0, args)
        check_sanitizers(res)
        return res


class Result:
    def __init__(self, p, elapsed, args):
        self.rc = p.returncode
        self.out = p.stdout.decode("utf-8", "replace")
        self.err = p.stderr.decode("utf-8", "replace")
        self.elapsed = elapsed
        self.args = args

    def __repr__(self):
        return "etrnctl %s -> %d\n--- stdout\n%s--- stderr\n%s" % (" ".join(self.args), self.rc, self.out, self.err)

    def json(self):
        return [json.loads(l) for l in self.out.splitlines() if l.strip()]


def check_sanitizers(res):
    for m in SANITIZER_MARKERS:
        assert m not in res.err, "sanitizer report from etrnctl:\n%r" % res


@pytest.fixture
def etrnctl(etrnctl_path, tmp_path):
    return Etrnctl(etrnctl_path, tmp_path)


def route(sink):
    return "127.0.0.1:%d" % sink.port


def relay_arg(r):
    return "127.0.0.1:%d" % r.port


# --- a tiny scriptable SMTP server: a relay that is not relayd ----------------------------


class FakeRelay:
    """An SMTP server on host:port that answers EHLO with the given keywords and
    ETRN with etrn(arg) -> reply line (default 250). It records every command
    and connection."""

    def __init__(self, host="127.0.0.1", port=0, ehlo=("PIPELINING", "ETRN"), etrn=None, greeting=None,
                 etrn_delay=0.0, ehlo_reply=None):
        self.host = host
        self.ehlo = list(ehlo)
        self.etrn = etrn or (lambda arg: "250 Queuing started")
        self.greeting = greeting or "220 fake.test ESMTP"
        self.ehlo_reply = ehlo_reply
        self.etrn_delay = etrn_delay
        self.commands = []
        self.conns = 0
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.port = self.sock.getsockname()[1]
        self.stopping = False
        self.threads = []

    def start(self):
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self.threads.append(t)
        return self

    def stop(self):
        self.stopping = True
        for t in self.threads:
            t.join(5)
        self.sock.close()

    def etrns(self):
        with self.lock:
            return [c[5:] for c in self.commands if c.upper().startswith("ETRN ")]

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.conns += 1
            t = threading.Thread(target=self._serve, args=(c,), daemon=True)
            t.start()
            self.threads.append(t)

    def _serve(self, c):
        c.settimeout(20)
        f = c.makefile("rb")
        try:
            c.sendall((self.greeting + "\r\n").encode())
            if not self.greeting.startswith("220"):
                return
            for _ in range(100):
                line = f.readline()
                if not line:
                    return
                line = line.decode().rstrip("\r\n")
                with self.lock:
                    self.commands.append(line)
                verb = line.split(" ", 1)[0].upper()
                if verb == "EHLO":
                    if self.ehlo_reply:
                        out = [self.ehlo_reply]
                    else:
                        lines = ["fake.test hello"] + self.ehlo
                        out = ["250%s%s" % ("-" if i < len(lines) - 1 else " ", l) for i, l in enumerate(lines)]
                elif verb == "HELO":
                    out = ["250 fake.test"]
                elif verb == "ETRN":
                    if self.etrn_delay:
                        time.sleep(self.etrn_delay)
                    out = [self.etrn(line[5:])]
                elif verb == "QUIT":
                    c.sendall(b"221 bye\r\n")
                    return
                else:
                    out = ["502 5.5.2 not implemented"]
                c.sendall("".join(l + "\r\n" for l in out).encode())
        except OSError:
            pass
        finally:
            f.close()
            c.close()


@pytest.fixture
def fakes():
    started = []

    def make(**kw):
        f = FakeRelay(**kw)
        started.append(f)
        return f.start()

    yield make
    for f in started:
        f.stop()


# --- etrnctl etrn against relayd -------------------------------------------------------------


def test_every_relayd_reply_and_its_exit_status(denv, etrnctl):
    site = denv.sink("site")
    r = denv.relayd(domains={"example.org": {"mode": "hold", "route": route(site)},
                             "empty.test": {"mode": "hold", "route": route(site)}})
    with Client(r) as c:
        c.send("s@sender.test", ["u1@example.org"], message("m1"))
        c.send("s@sender.test", ["u2@example.org", "u3@example.org"], message("m2"))

    # 253 -> 0, "flushing N messages"
    res = etrnctl.run("etrn", "-H", relay_arg(r), "example.org")
    assert res.rc == 0, res
    assert res.out == "%s: example.org: flushing 2 messages\n" % relay_arg(r), res
    assert res.err == "", res
    site.wait_for(2, 20)
    r.wait_log(r"ETRN from unknown\[127\.0\.0\.1\]:\d+: arg=<example\.org> result=253 count=2")

    # 251 -> 0, "nothing waiting"
    res = etrnctl.run("etrn", "-H", relay_arg(r), "empty.test")
    assert res.rc == 0, res
    assert res.out == "%s: empty.test: nothing waiting\n" % relay_arg(r), res

    # 459 -> 77 (refused), reported on stderr with the relay's words
    res = etrnctl.run("etrn", "-H", relay_arg(r), "notours.test")
    assert res.rc == EX_NOPERM, res
    assert res.out == ""
    assert "notours.test: refused (459 4.7.1 Node <notours.test> not allowed: not a relay domain this client may flush)" in res.err, res

    # the forms RFC 1985 defines pass through as given
    res = etrnctl.run("-v", "etrn", "-H", relay_arg(r), "@empty.test")
    assert res.rc == 0, res
    assert "-> ETRN @empty.test" in res.err, res

    # -v shows the dialogue and the reply after the result; -q nothing at all
    res = etrnctl.run("etrn", "-v", "-H", relay_arg(r), "empty.test")
    assert "-> EHLO " in res.err and re.search(r"<- 250[- ]ETRN$", res.err, re.M), res
    assert "empty.test: nothing waiting (251 2.0.0 OK, no messages waiting for node <empty.test>)" in res.out
    res = etrnctl.run("etrn", "-q", "-H", relay_arg(r), "empty.test")
    assert (res.rc, res.out, res.err) == (0, "", ""), res

    # the short form, as Solaris etrn(1M)
    res = etrnctl.run(relay_arg(r), "empty.test")
    assert res.rc == 0 and "empty.test: nothing waiting" in res.out, res


def test_458_is_temporary(denv, etrnctl):
    r = denv.relayd(domains={"example.org": {"mode": "hold", "route": "127.0.0.1:9"}}, etrn_rate="2/1m")
    for _ in range(2):
        assert etrnctl.run("etrn", "-H", relay_arg(r), "example.org").rc == 0
    res = etrnctl.run("etrn", "-H", relay_arg(r), "example.org")
    assert res.rc == EX_TEMPFAIL, res
    assert re.search(r"example\.org: relay cannot start a flush now \(458 4\.7\.0 ", res.err), res
    r.wait_log(r"arg=<example\.org> result=458")


def test_several_domains_first_with_nothing_waiting(denv, etrnctl):
    """fetchmail stops at the first 251; etrnctl asks for every domain."""
    site = denv.sink("site")
    r = denv.relayd(domains={"empty.test": {"mode": "hold", "route": route(site)},
                             "example.org": {"mode": "hold", "route": route(site)},
                             "example.net": {"mode": "hold", "route": route(site)}})
    with Client(r) as c:
        c.send("s@sender.test", ["u@example.org"], message("org"))
        c.send("s@sender.test", ["u@example.net"], message("net1"))
        c.send("s@sender.test", ["v@example.net"], message("net2"))
    res = etrnctl.run("--json", "etrn", "-H", relay_arg(r), "empty.test", "example.org", "example.net")
    assert res.rc == 0, res
    recs = res.json()
    assert [(x["domain"], x["code"], x["count"], x["status"]) for x in recs] == [
        ("empty.test", 251, 0, 0), ("example.org", 253, 1, 0), ("example.net", 253, 2, 0)], res
    assert recs[1]["reply"] == "253 2.0.0 1 pending messages for node <example.org> started"
    assert all(x["relay"] == relay_arg(r) and x["round"] == 1 for x in recs)
    got = site.wait_for(3, 20)
    assert sorted(subject_of(t.data) for t in got) == ["net1", "net2", "org"]
    # one session: EHLO once, one ETRN per domain
    assert len(re.findall(r"ETRN from unknown\[127\.0\.0\.1\]:\d+: ", r.log_text())) == 3
    r.wait_log(r"disconnect from unknown\[127\.0\.0\.1\]:\d+ ehlo=1 etrn=3 quit=1 commands=5")


@pytest.mark.time_limit(120)
def test_wait_sees_the_count_fall_to_zero(denv, etrnctl):
    site = denv.sink("site")
    site.behaviour.delay = 0.12  # a slow site: the flush takes a few seconds
    n = 20
    r = denv.relayd(domains={"example.org": {"mode": "hold", "route": route(site)}}, etrn_rate="1000/1m")
    with Client(r) as c:
        for i in range(n):
            c.send("s@sender.test", ["u%d@example.org" % i], message("w%02d" % i))
    res = etrnctl.run("etrn", "-H", relay_arg(r), "--wait", "60", "example.org", timeout=90)
    assert res.rc == 0, res
    lines = res.out.splitlines()
    prefix = "%s: example.org: " % relay_arg(r)
    assert lines[0] == prefix + "flushing %d messages" % n, res
    assert lines[-1] == prefix + "0 waiting", res
    counts = [int(re.match(re.escape(prefix) + r"(\d+) waiting$", l).group(1)) for l in lines[1:]]
    assert counts == sorted(counts, reverse=True), res
    assert any(0 < k < n for k in counts), "never saw the count fall: %r" % res
    # at the 251 everything had arrived
    assert site.count() == n
    assert r.queue.count() == 0


def test_wait_times_out_with_75(denv, etrnctl):
    site = denv.sink("site", start=False)  # the site never comes up: nothing drains
    r = denv.relayd(domains={"example.org": {"mode": "hold", "route": route(site)}}, etrn_rate="1000/1m")
    with Client(r) as c:
        c.send("s@sender.test", ["u@example.org"], message("stuck"))
    res = etrnctl.run("etrn", "-H", relay_arg(r), "--wait=2", "example.org", "--json")
    assert res.rc == EX_TEMPFAIL, res
    recs = res.json()
    assert recs[0]["code"] == 253 and recs[0]["round"] == 1
    assert recs[-1]["status"] == EX_TEMPFAIL and "still waiting" in recs[-1]["result"], res
    # it waited its 2 s (measured from before etrnctl started: only longer),
    # asking again meanwhile
    assert res.elapsed >= 2, res
    assert len([x for x in recs if x["code"] == 253]) >= 2


# --- against a real Postfix -------------------------------------------------------------------


def postfix_relay(denv, domain, transport=None):
    """A private Postfix acting as a relay that keeps `domain`'s mail and
    accepts ETRN for it from 127.0.0.1 (fast_flush_domains, smtpd_etrn_restrictions)."""
    from postfix_site import PostfixSite

    p = PostfixSite("pfrelay.test")
    denv.postfixes.append(p)  # torn down with the environment
    p.setup()
    settings = ["relay_domains=%s" % domain, "fast_flush_domains=$relay_domains",
                "smtpd_etrn_restrictions=permit_mynetworks, reject",
                # a deferred message may be retried at once after ETRN
                "minimal_backoff_time=300s", "maximal_backoff_time=600s", "queue_run_delay=300s"]
    if transport:
        with open(os.path.join(p.etc, "transport"), "w") as f:
            f.write("%s smtp:[127.0.0.1]:%d\n" % (domain, transport))
        settings.append("transport_maps=texthash:%s/transport" % p.etc)
    p.run(["postconf", "-c", p.etc, "-e"] + settings)
    past = time.time() - 5
    os.utime(os.path.join(p.etc, "main.cf"), (past, past))
    return p.start()


@pytest.mark.time_limit(150)
def test_postfix_bare_250_means_started_count_unknown(denv, etrnctl):
    site = denv.sink("site", start=False)
    pf = postfix_relay(denv, "remote.test", transport=site.port)
    # mail for remote.test waits at Postfix: the site is down
    import smtplib
    s = smtplib.SMTP("127.0.0.1", pf.port, local_hostname="client.test", timeout=20)
    s.sendmail("s@sender.test", ["u@remote.test"], message("via-postfix", to="u@remote.test"))
    s.quit()
    wait_until(lambda: re.search(r"to=<u@remote\.test>.*status=deferred", pf.log_text()), 30,
               what="Postfix deferring the message")
    # and its fast-flush log naming it (written after the deferral's log line:
    # an ETRN before it would find nothing to flush until the next queue run)
    flog = os.path.join(pf.queue, "flush", "remote_test")  # Postfix's name for it
    wait_until(lambda: os.path.exists(flog) and os.path.getsize(flog) > 0, 30,
               what="Postfix's flush log for remote.test")

    site.start()
    res = etrnctl.run("etrn", "-H", "127.0.0.1:%d" % pf.port, "remote.test", "--json")
    assert res.rc == 0, res
    rec = res.json()[0]
    assert (rec["code"], rec["count"], rec["result"]) == (250, None, "started, count unknown"), res
    got = site.wait_for(1, 60, "Postfix flushing after etrnctl's ETRN")
    assert subject_of(got[0].data) == "via-postfix"

    # text form, and --wait does not poll a relay that never reports a count
    res = etrnctl.run("etrn", "-H", "127.0.0.1:%d" % pf.port, "--wait", "30", "remote.test")
    assert res.rc == 0, res
    # (polling a relay that never says 251 could only end in "still waiting"
    # and 75 after the 30 s)
    assert res.out == "127.0.0.1:%d: remote.test: started, count unknown\n" % pf.port, res

    # a domain Postfix does not flush: its 459 is a refusal
    res = etrnctl.run("etrn", "-H", "127.0.0.1:%d" % pf.port, "other.test")
    assert res.rc == EX_NOPERM, res
    assert "other.test: refused (459 " in res.err, res


# --- relays that are not relayd -------------------------------------------------------------


def test_relay_without_etrn_is_69(fakes, etrnctl):
    plain = fakes(ehlo=("PIPELINING", "8BITMIME"))
    res = etrnctl.run("etrn", "-H", relay_arg(plain), "example.org")
    assert res.rc == EX_UNAVAILABLE, res
    assert "example.org: relay does not offer ETRN" in res.err, res
    assert plain.etrns() == []  # never asked what it does not offer

    # no ESMTP at all: EHLO refused
    old = fakes(ehlo_reply="500 5.5.1 what is EHLO")
    res = etrnctl.run("etrn", "-H", relay_arg(old), "example.org")
    assert res.rc == EX_UNAVAILABLE, res
    assert not any(c.upper().startswith("HELO") for c in old.commands), old.commands

    # advertised but not implemented
    liar = fakes(etrn=lambda a: "502 5.5.2 Command not implemented")
    assert etrnctl.run("etrn", "-H", relay_arg(liar), "example.org").rc == EX_UNAVAILABLE

    # another relay took the ETRN for the domain: the plain MTA does not fail the run
    good = fakes(etrn=lambda a: "253 2.0.0 3 pending messages for node <%s> started" % a)
    res = etrnctl.run("etrn", "-H", relay_arg(plain), "-H", relay_arg(good), "example.org")
    assert res.rc == 0, res
    assert "flushing 3 messages" in res.out and "relay does not offer ETRN" in res.err, res


@pytest.mark.parametrize("reply,status,what", [
    ("250 OK, queuing for node <x> started", 0, "started, count unknown"),
    ("251 OK, no messages waiting for node <x>", 0, "nothing waiting"),
    ("252 OK, pending messages for node <x> started", 0, "flush started, count unknown"),
    ("253 OK, 7 pending messages for node <x> started", 0, "flushing 7 messages"),
    ("253 2.0.0 0 pending messages for node <x> started", 0, "nothing waiting"),
    ("253 started, somewhere", 0, "flush started, count unknown"),
    ("458 Unable to queue messages for node <x>", EX_TEMPFAIL, "relay cannot start a flush now"),
    ("421 4.3.2 shutting down", EX_TEMPFAIL, "relay closed the session"),
    ("450 4.7.1 later", EX_TEMPFAIL, "temporary failure"),
    ("459 Node <x> not allowed: nope", EX_NOPERM, "refused"),
    ("554 5.7.1 policy says no", EX_NOPERM, "refused"),
    ("500 5.5.1 Command unrecognized", EX_UNAVAILABLE, "relay does not support ETRN"),
])
def test_rfc1985_replies_from_any_server(fakes, etrnctl, reply, status, what):
    f = fakes(etrn=lambda a: reply)
    res = etrnctl.run("etrn", "-H", relay_arg(f), "example.org")
    assert res.rc == status, res
    assert what in (res.out if status == 0 else res.err), res
    assert f.etrns() == ["example.org"]


def test_worst_outcome_wins(fakes, etrnctl):
    ok = fakes(etrn=lambda a: "251 nothing")
    refuse = fakes(etrn=lambda a: "459 no" if a == "b.test" else "251 nothing")
    temp = fakes(etrn=lambda a: "458 later")
    # refused (77) outranks temporary (75): a retry cannot fix it
    res = etrnctl.run("etrn", "-H", relay_arg(ok), "-H", relay_arg(temp), "-H", relay_arg(refuse), "a.test", "b.test")
    assert res.rc == EX_NOPERM, res
    res = etrnctl.run("etrn", "-H", relay_arg(ok), "-H", relay_arg(temp), "a.test")
    assert res.rc == EX_TEMPFAIL, res
    # every relay was asked for every domain
    assert ok.etrns() == ["a.test", "b.test", "a.test"]
    assert refuse.etrns() == ["a.test", "b.test"]


def test_nothing_listening_is_75_and_retry_retries(etrnctl):
    port = free_port()
    res = etrnctl.run("etrn", "-H", "127.0.0.1:%d" % port, "example.org")
    assert res.rc == EX_TEMPFAIL, res
    assert "example.org: cannot connect (connect: Connection refused)" in res.err, res

    res = etrnctl.run("etrn", "-v", "--retry", "2", "--retry-delay", "0.2", "-H", "127.0.0.1:%d" % port,
                      "example.org")
    assert res.rc == EX_TEMPFAIL, res
    attempts = re.findall(r"connecting \(attempt (\d) of 3\)", res.err)
    assert attempts == ["1", "2", "3"], res
    assert len(re.findall(r"retrying in 0\.2s", res.err)) == 2, res
    assert res.elapsed >= 0.4, res


def test_retry_until_the_relay_comes_up(fakes, etrnctl):
    port = free_port()
    started = {}

    def later():
        time.sleep(1.0)
        started["f"] = fakes(port=port, etrn=lambda a: "253 2.0.0 1 pending messages for node <%s> started" % a)

    t = threading.Thread(target=later)
    t.start()
    res = etrnctl.run("etrn", "-v", "--retry", "10", "--retry-delay", "0.3", "-H", "127.0.0.1:%d" % port,
                      "example.org")
    t.join()
    assert res.rc == 0, res
    assert "example.org: flushing 1 message" in res.out, res
    n = len(re.findall(r"connecting \(attempt \d+ of 11\)", res.err))
    assert 2 <= n <= 10, res
    assert started["f"].etrns() == ["example.org"]


def test_4xx_is_retried_for_that_domain_only(fakes, etrnctl):
    answers = {"a.test": ["458 busy", "253 2.0.0 2 pending messages for node <a.test> started"]}

    def etrn(arg):
        lst = answers.get(arg)
        return lst.pop(0) if lst else "251 nothing"

    f = fakes(etrn=etrn)
    res = etrnctl.run("etrn", "--retry", "1", "--retry-delay", "0.1", "-H", relay_arg(f), "a.test", "b.test")
    assert res.rc == 0, res
    assert f.etrns() == ["a.test", "b.test", "a.test"]
    assert "a.test: flushing 2 messages" in res.out and "b.test: nothing waiting" in res.out, res


def test_all_mx_asks_every_backup_but_the_site_itself(denv, fakes, etrnctl):
    hosts = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    port = denv.common_port(hosts)
    mx1 = fakes(host="127.0.0.2", port=port, etrn=lambda a: "253 2.0.0 4 pending messages for node <%s> started" % a)
    mx2 = fakes(host="127.0.0.3", port=port, etrn=lambda a: "251 2.0.0 OK, no messages waiting")
    me = fakes(host="127.0.0.4", port=port)
    dns = denv.dns(mx=[("site.test", "mx.site.test", 5), ("site.test", "backup1.isp.test", 10),
                       ("site.test", "backup2.isp.test", 20), ("other.test", "backup1.isp.test", 10)],
                   hosts={"mx.site.test": "127.0.0.4", "backup1.isp.test": "127.0.0.2",
                          "backup2.isp.test": "127.0.0.3"})
    res = etrnctl.run("etrn", "--all-mx", "--self", "mx.site.test", "--dns", dns.server, "--port", str(port),
                      "site.test", "other.test", "-v")
    assert res.rc == 0, res
    assert sorted(mx1.etrns()) == ["other.test", "site.test"]
    assert mx2.etrns() == ["site.test"]
    assert me.conns == 0, "asked the site itself"
    assert "MX 5 mx.site.test is this site: skipped" in res.err, res
    assert "backup1.isp.test:%d: site.test: flushing 4 messages" % port in res.out, res
    assert "backup2.isp.test:%d: site.test: nothing waiting" % port in res.out, res
    # one session per relay, both domains in it
    assert mx1.conns == 1

    # a backup MX that is a plain MTA (no ETRN) does not fail the run...
    mx2.ehlo = ["PIPELINING"]
    res = etrnctl.run("etrn", "--all-mx", "--self", "mx.site.test", "--dns", dns.server, "--port", str(port),
                      "site.test")
    assert res.rc == 0, res
    assert "backup2.isp.test:%d: site.test: relay does not offer ETRN" % port in res.err, res

    # ...but when no relay takes it, it does
    res = etrnctl.run("etrn", "--all-mx", "--self", "mx.site.test", "--self", "backup1.isp.test.",
                      "--dns", dns.server, "--port", str(port), "site.test")
    assert res.rc == EX_UNAVAILABLE, res

    # only the site itself: no relay to ask
    res = etrnctl.run("etrn", "--all-mx", "--self", "mx.site.test", "--self", "backup1.isp.test",
                      "--self", "backup2.isp.test", "--dns", dns.server, "--port", str(port), "site.test")
    assert res.rc == EX_UNAVAILABLE, res
    assert "site.test: no MX host other than this site" in res.err, res

    # no such domain
    res = etrnctl.run("etrn", "--all-mx", "--dns", dns.server, "--port", str(port), "nowhere.test")
    assert res.rc == EX_UNAVAILABLE, res
    assert "nowhere.test: MX lookup" in res.err, res


def test_lock_second_run_for_the_same_domains_exits_75(fakes, etrnctl):
    slow = fakes(etrn=lambda a: "251 nothing", etrn_delay=2.0)
    first = etrnctl.popen(["etrn", "-H", relay_arg(slow), "a.test", "b.test"])
    try:
        wait_until(lambda: slow.conns >= 1, 10, what="the first run connecting")
        # same domains, other order and case: the same lock
        res = etrnctl.run("etrn", "-H", relay_arg(slow), "B.test", "a.test")
        assert res.rc == EX_TEMPFAIL, res
        assert "another etrnctl pid %d is already running for these domains" % first.pid in res.err, res
        # other domains are not held up
        res = etrnctl.run("etrn", "-H", relay_arg(slow), "c.test")
        assert res.rc == 0, res
    finally:
        out, err = first.communicate(timeout=30)
    assert first.returncode == 0, (out, err)
    # the lock is free again
    assert etrnctl.run("etrn", "-H", relay_arg(slow), "a.test", "b.test").rc == 0
    assert len(os.listdir(etrnctl.lockdir)) == 2


def test_defaults_file(fakes, etrnctl, public_tmpdir):
    f1 = fakes(etrn=lambda a: "251 nothing")
    f2 = fakes(etrn=lambda a: "251 nothing")
    with open(etrnctl.defaults, "w") as fp:
        fp.write('# /etc/default/etrnctl\nexport ETRN_RELAYS="%s 127.0.0.1:%d"\n'
                 "ETRN_DOMAINS='a.test b.test'  # two\nOTHER=ignored\n\n" % (relay_arg(f1), f2.port))
    res = etrnctl.run("etrn")
    assert res.rc == 0, res
    assert f1.etrns() == ["a.test", "b.test"] and f2.etrns() == ["a.test", "b.test"]
    # the command line wins over the file
    res = etrnctl.run("etrn", "c.test")
    assert res.rc == 0 and f1.etrns()[-1] == "c.test", res
    res = etrnctl.run("etrn", "-H", relay_arg(f2))
    assert res.rc == 0 and f1.etrns() == ["a.test", "b.test", "c.test"], res

    for bad in ['ETRN_RELAYS="unterminated\n', "ETRN_DOMAINS=$HOME\n", "just words\n",
                "ETRN_DOMAINS=a b\n"]:
        with open(etrnctl.defaults, "w") as fp:
            fp.write(bad)
        res = etrnctl.run("etrn")
        assert res.rc == EX_CONFIG, (bad, res)
        assert etrnctl.defaults in res.err, res
    res = etrnctl.run("etrn", env={"ETRNCTL_DEFAULTS": str(etrnctl.tmp / "missing")})
    assert res.rc == EX_CONFIG, res
    # a defaults file its user cannot read is a configuration error. Root reads
    # anything, so the test runs a copy of etrnctl as nobody, on a copy of the
    # file in a directory nobody can reach (root fails hard if it cannot).
    assert os.geteuid() == 0, "needs root to run etrnctl as another user"
    nobody = pwd.getpwnam("nobody")
    defaults = os.path.join(public_tmpdir, "etrnctl.defaults")
    with open(defaults, "w") as fp:
        fp.write('ETRN_RELAYS="%s"\nETRN_DOMAINS="a.test"\n' % relay_arg(f1))
    os.chmod(defaults, 0o644)
    etrnctl.path = shutil.copy(etrnctl.path, os.path.join(public_tmpdir, "etrnctl"))
    os.chmod(etrnctl.path, 0o755)
    locks = os.path.join(public_tmpdir, "locks")
    os.mkdir(locks)
    os.chown(locks, nobody.pw_uid, nobody.pw_gid)
    env = {"ETRNCTL_DEFAULTS": defaults, "ETRNCTL_LOCK_DIR": locks}
    # readable, it works as nobody too (so the refusal below is the file's mode)
    before = len(f1.etrns())
    res = etrnctl.run("etrn", env=env, user=(nobody.pw_uid, nobody.pw_gid))
    assert res.rc == 0 and f1.etrns()[before:] == ["a.test"], res
    os.chmod(defaults, 0)
    res = etrnctl.run("etrn", env=env, user=(nobody.pw_uid, nobody.pw_gid))
    assert res.rc == EX_CONFIG, res
    assert defaults in res.err and "Permission denied" in res.err, res
    assert f1.etrns()[before:] == ["a.test"]


def test_usage_errors_are_64(etrnctl):
    for args in [[], ["etrn"], ["etrn", "-H", "127.0.0.1:25"], ["etrn", "-H", "127.0.0.1:99999", "a.test"],
                 ["etrn", "-H", "127.0.0.1", "not a domain"], ["etrn", "-H", "127.0.0.1", "a..test"],
                 ["etrn", "--retry", "x", "-H", "h", "a.test"], ["etrn", "--bogus"], ["nosuchcommand"],
                 ["etrn", "--all-mx", "#queue"], ["etrn", "--starttls=maybe", "-H", "h", "a.test"],
                 ["etrn", "-H", "h", "a.test", "A.test"], ["queue", "--older-than", "soon"],
                 ["show"], ["flush"], ["delete"], ["hold", "bad/id"]]:
        res = etrnctl.run(*args)
        assert res.rc == EX_USAGE, res
        assert res.out == "", res
    res = etrnctl.run("--help")
    assert res.rc == 0 and "etrn [-H RELAY[:PORT]]" in res.out and "queue [DOMAIN]" in res.out
    res = etrnctl.run("--version")
    assert res.rc == 0 and re.match(r"etrnctl \(relayd\) \S+\n$", res.out), res


def test_wait_local_waits_for_the_site_mta(fakes, etrnctl):
    relay = fakes(etrn=lambda a: "251 nothing")
    local_port = free_port()
    started = []

    def later():
        time.sleep(1.2)
        started.append(fakes(port=local_port))

    t = threading.Thread(target=later)
    t.start()
    res = etrnctl.run("etrn", "--wait-local", "127.0.0.1:%d" % local_port, "-H", relay_arg(relay), "a.test")
    t.join()
    assert res.rc == 0, res
    assert res.elapsed >= 1.0, res
    assert started[0].conns >= 1 and relay.etrns() == ["a.test"]

    # bounded by the wait timeout; the relay is not asked before the site is up
    res = etrnctl.run("etrn", "--wait-local", "127.0.0.1:%d" % free_port(), "--wait", "1.5", "-H", relay_arg(relay),
                      "b.test")
    assert res.rc == EX_TEMPFAIL, res
    assert "local MTA at 127.0.0.1:" in res.err, res
    assert relay.etrns() == ["a.test"]


def test_starttls(relayd_factory, tls_cert, etrnctl):
    cert, key = tls_cert
    r = relayd_factory(tls_cert=cert, tls_key=key, domains={"example.org": {"mode": "hold", "route": "127.0.0.1:9"}})
    res = etrnctl.run("etrn", "-v", "--starttls", "-H", relay_arg(r), "example.org")
    assert res.rc == 0, res
    assert "-> STARTTLS" in res.err and re.search(r": TLS TLSv1\.[23] ", res.err), res
    assert "nothing waiting" in res.out
    # verified: the certificate names relay.test, not 127.0.0.1
    res = etrnctl.run("etrn", "--starttls=verify", "--tls-ca", cert, "-H", relay_arg(r), "example.org")
    assert res.rc == EX_PROTOCOL, res
    assert "TLS failed" in res.err, res
    # a relay without STARTTLS when it is required
    plain = relayd_factory(domains={"example.org": {"mode": "hold", "route": "127.0.0.1:9"}})
    res = etrnctl.run("etrn", "--starttls", "-H", relay_arg(plain), "example.org")
    assert res.rc == EX_UNAVAILABLE and "does not offer STARTTLS" in res.err, res


def test_starttls_verify_against_a_trusted_ca(relayd_factory, tls_ca, etrnctl):
    # relayd's certificate is signed by a CA etrnctl is given and names the
    # relay as etrnctl reaches it (IP:127.0.0.1): verified, ETRN goes through;
    # the same relay with a CA that did not sign it: TLS failed, exit 76
    r = relayd_factory(tls_cert=tls_ca["cert"], tls_key=tls_ca["key"],
                       domains={"example.org": {"mode": "hold", "route": "127.0.0.1:9"}})
    res = etrnctl.run("etrn", "-v", "--starttls=verify", "--tls-ca", tls_ca["ca"], "-H", relay_arg(r),
                      "example.org")
    assert res.rc == 0, res
    assert re.search(r": TLS TLSv1\.[23] ", res.err) and "nothing waiting" in res.out, res
    r.wait_log(r"TLS connection established from .*127\.0\.0\.1.*: TLSv1\.[23] with cipher")
    res = etrnctl.run("etrn", "--starttls=verify", "--tls-ca", tls_ca["other_ca"], "-H", relay_arg(r),
                      "example.org")
    assert res.rc == EX_PROTOCOL, res
    assert "TLS failed" in res.err and "certificate verify failed" in res.err, res


# --- operator commands over the control socket ----------------------------------------------

SENDER = "sender@sender.test"


def ctl_relayd(denv, etrnctl, tmp_path, domains, **keys):
    sock = str(tmp_path / "ctl" / "control.sock")
    r = denv.relayd(domains=domains, control_socket=sock, **keys)
    etrnctl.socket = sock
    return r


def known_queue(denv, etrnctl, tmp_path, **keys):
    """relayd with example.org (site down) and other.test (its own site) on hold,
    and four messages: returns (relayd, site, other, {subject: queue id})."""
    site = denv.sink("site", start=False)
    other = denv.sink("other")
    r = ctl_relayd(denv, etrnctl, tmp_path, {"example.org": {"mode": "hold", "route": route(site)},
                                             "other.test": {"mode": "hold", "route": route(other)}}, **keys)
    ids = {}
    with Client(r) as c:
        ids["a1"] = c.send(SENDER, ["u1@example.org"], message("a1"))
        ids["a2"] = c.send(SENDER, ["u2@example.org", "u3@example.org"], message("a2", lines=["x" * 3000]))
        ids["b1"] = c.send("bulk@spam.test", ["w1@other.test"], message("b1", to="w1@other.test"))
        ids["mixed"] = c.send(SENDER, ["u4@example.org", "w2@other.test"], message("mixed"))
    return r, site, other, ids


def test_queue_text_json_filters_and_count(denv, etrnctl, tmp_path):
    r, site, other, ids = known_queue(denv, etrnctl, tmp_path)

    res = etrnctl.run("queue")
    assert res.rc == 0, res
    lines = res.out.splitlines()
    assert lines[0].startswith("-Queue ID-") and "-Sender/Recipient-" in lines[0], res
    for subj, qid in ids.items():
        assert re.search(r"(?m)^%s  +\d+ \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d  +(%s|bulk@spam\.test)$" % (qid, SENDER),
                         res.out), (subj, res)
    assert re.search(r"(?m)^ {46}u3@example\.org$", res.out), res
    assert lines[-1] == "-- %d Kbytes in 4 Requests." % ((sum(m["size"] for m in r.queue.messages()) + 1023) // 1024), res

    res = etrnctl.run("queue", "--json")
    recs = res.json()
    assert res.rc == 0 and len(recs) == 4, res
    byid = {x["queue_id"]: x for x in recs}
    assert set(byid) == set(ids.values())
    a2 = byid[ids["a2"]]
    assert a2["queue_name"] == "deferred" and a2["sender"] == SENDER and a2["domain"] == "example.org"
    assert a2["message_size"] > 3000 and isinstance(a2["arrival_time"], int)
    assert [x["address"] for x in a2["recipients"]] == ["u2@example.org", "u3@example.org"]
    assert all(x["held"] is False for x in a2["recipients"])

    def ids_of(*args):
        res = etrnctl.run("queue", "--ids-only", *args)
        assert res.rc == 0, res
        return sorted(res.out.split())

    assert ids_of("--domain", "other.test") == sorted([ids["b1"], ids["mixed"]])
    assert ids_of("other.test") == sorted([ids["b1"], ids["mixed"]])
    assert ids_of("--sender", "BULK@") == [ids["b1"]]
    assert ids_of("--recipient", "u3@") == [ids["a2"]]
    assert ids_of("--older-than", "1h") == []
    assert etrnctl.run("queue", "--count").out == "4\n"
    assert etrnctl.run("queue", "example.org", "--count").out == "3\n"
    assert etrnctl.run("queue", "--count", "--json").json() == [{"count": 4}]
    assert etrnctl.run("queue", "--limit", "1", "--count").out == "1\n"


def test_request_values_are_percent_encoded(denv, etrnctl, tmp_path):
    """Filter values with '=', '%', '+' and spaces reach relayd intact."""
    site = denv.sink("site", start=False)
    r = ctl_relayd(denv, etrnctl, tmp_path, {"example.org": {"mode": "hold", "route": route(site)}})
    with Client(r) as c:
        odd = c.send("odd=na%me+x@sender.test", ["u@example.org"], message("odd"))
        c.send(SENDER, ["u@example.org"], message("plain"))
    res = etrnctl.run("-v", "queue", "--ids-only", "--sender", "ODD=NA%ME+")
    assert res.rc == 0 and res.out.split() == [odd], res
    assert "sender=ODD%3DNA%25ME+" in res.err, res
    res = etrnctl.run("queue", "--count", "--sender", "odd na")
    assert (res.rc, res.out) == (0, "0\n"), res
    res = etrnctl.run("queue", "--count", "--recipient", "u@example.org")
    assert (res.rc, res.out) == (0, "2\n"), res


def test_summary_domains_show(denv, etrnctl, tmp_path):
    r, site, other, ids = known_queue(denv, etrnctl, tmp_path)

    res = etrnctl.run("summary")
    assert res.rc == 0, res
    rows = [l.split() for l in res.out.splitlines()]
    assert rows[0][:4] == ["T", "BYTES", "5", "10"] and rows[0][-1].endswith("+"), res
    table = {row[0]: row[1:] for row in rows[1:]}
    # as in qshape, a message counts once in each of its recipients' domains
    assert table["TOTAL"][0] == "5" and table["example.org"][0] == "3" and table["other.test"][0] == "2", res
    assert table["example.org"][2] == "3"  # all younger than 5 minutes
    recs = etrnctl.run("summary", "--json").json()
    assert {x["domain"]: x["messages"] for x in recs} == {"example.org": 3, "other.test": 2}
    assert recs[0]["bucket_limits"][0] == 300

    res = etrnctl.run("domains")
    assert res.rc == 0, res
    # 80 columns: the route, last delivery and expiry only with --wide
    assert re.search(r"(?m)^DOMAIN +MODE +MSGS +BYTES +HELD +QUOTA +OLDEST +LAST-ETRN +LAST-ERROR$", res.out), res
    assert re.search(r"(?m)^example\.org +hold +3 +\d+ +0 +- +\d+s ago +- ", res.out), res
    assert max(len(l) for l in res.out.splitlines()) <= 80, res
    res = etrnctl.run("domains", "--wide")
    assert res.rc == 0, res
    assert re.search(r"(?m)^DOMAIN +MODE +ROUTE +MSGS +BYTES +HELD +QUOTA +OLDEST", res.out), res
    assert re.search(r"(?m)^example\.org +hold +127\.0\.0\.1:%d +3 +\d+ +0 +- +\d+s ago +- " % site.port, res.out), res
    recs = {x["domain"]: x for x in etrnctl.run("--json", "domains").json()}
    assert recs["example.org"]["messages"] == 3 and recs["example.org"]["configured"] is True
    assert recs["other.test"]["mode"] == "hold" and recs["other.test"]["last_etrn"] is None

    res = etrnctl.run("show", ids["a2"])
    assert res.rc == 0, res
    assert "queue_id: %s\n" % ids["a2"] in res.out and "sender: <%s>\n" % SENDER in res.out, res
    assert "recipient: <u2@example.org> attempts=0" in res.out and "client: client.test [127.0.0.1]" in res.out, res
    assert "\nSubject: a2\n" in res.out and "x" * 3000 in res.out and "\r" not in res.out, res
    rec = etrnctl.run("show", "--json", ids["a1"]).json()[0]
    assert rec["queue_id"] == ids["a1"] and "Subject: a1\r\n" in rec["body"]
    assert rec["body"] == r.queue.message(ids["a1"])["body"].decode()

    res = etrnctl.run("show", "AAAAAAAAAAAAAA")
    assert res.rc == EX_NOINPUT, res
    assert "no message" in res.err, res


def run_on_a_terminal(etrnctl, *args):
    """Run etrnctl with stdout on a pseudo-terminal (as an operator at a
    shell has it); returns (exit status, bytes written to the terminal)."""
    import pty
    import select

    master, slave = pty.openpty()
    try:
        p = subprocess.Popen([etrnctl.path] + list(args), stdin=subprocess.DEVNULL, stdout=slave,
                             stderr=subprocess.PIPE, env=etrnctl.env())
        os.close(slave)
        slave = None
        out = b""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if p.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's last writer is gone
                break
            if not chunk:
                break
            out += chunk
        rc = p.wait(timeout=30)
        assert p.stderr.read() == b""
        p.stderr.close()
        return rc, out
    finally:
        if slave is not None:
            os.close(slave)
        os.close(master)


def test_show_escapes_control_characters_on_a_terminal(denv, etrnctl, tmp_path):
    """A body is a stranger's bytes: on a terminal, show makes every control
    character visible (ESC as ^[, BS as ^H, C1 and bad UTF-8 as
    \\xNN) and keeps text, TABs and line ends; --raw, a pipe and --json get
    the bytes as stored."""
    site = denv.sink("site", start=False)
    r = ctl_relayd(denv, etrnctl, tmp_path, {"example.org": {"mode": "hold", "route": route(site)}})
    evil = ["title \x1b]0;owned\x07 clear \x1b[2J back\x08space", "csi \u009b31m tab\there caf\u00e9"]
    with Client(r) as c:
        qid = c.send(SENDER, ["u@example.org"], message("evil", lines=evil), mail_opts=["BODY=8BITMIME"])

    rc, out = run_on_a_terminal(etrnctl, "show", qid)
    assert rc == 0, out
    assert b"\x1b" not in out and b"\x07" not in out and b"\xc2\x9b" not in out, out
    text = out.replace(b"\r\n", b"\n")  # the terminal's own line ends (ONLCR)
    assert b"\ntitle ^[]0;owned^G clear ^[[2J back^Hspace\n" in text, out
    assert b"\ncsi \\xc2\\x9b31m tab\there caf\xc3\xa9\n" in text, out
    assert b"\nSubject: evil\n" in text, out

    rc, out = run_on_a_terminal(etrnctl, "show", "--raw", qid)
    assert rc == 0 and b"title \x1b]0;owned\x07 clear \x1b[2J back\x08space" in out, out

    res = subprocess.run([etrnctl.path, "show", qid], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=etrnctl.env(), timeout=60)
    assert res.returncode == 0 and b"back\x08space\ncsi \xc2\x9b31m" in res.stdout, res
    rec = etrnctl.run("show", "--json", qid).json()[0]
    assert "\x1b]0;owned\x07" in rec["body"] and "\u009b31m" in rec["body"]


def runs_over(etrnctl, *domains):
    """Wait (bounded) until `etrnctl domains` shows no delivery run going for
    any of domains: the marker that a flush has delivered what it would."""
    def idle():
        by = {x["domain"]: x for x in etrnctl.run("domains", "--json").json()}
        return all(not by[d]["flushing"] for d in domains if d in by)

    wait_until(idle, 30, what="the delivery runs of %s to end" % ", ".join(domains))


def test_flush_by_domain_delivers_only_that_domain(denv, etrnctl, tmp_path):
    r, site, other, ids = known_queue(denv, etrnctl, tmp_path)
    site.start()
    res = etrnctl.run("flush", "example.org")
    assert res.rc == 0, res
    assert res.out == "example.org: flushing 3 messages\n", res
    got = site.wait_for(3, 20)
    assert sorted(subject_of(t.data) for t in got) == ["a1", "a2", "mixed"]
    wait_until(lambda: etrnctl.run("queue", "--count").out == "2\n", 10, what="example.org drained")
    runs_over(etrnctl, "example.org", "other.test")
    assert other.count() == 0 and other.conns == 0
    assert sorted(etrnctl.run("queue", "--ids-only").out.split()) == sorted([ids["b1"], ids["mixed"]])

    # by id: that message is due, and its domain is flushed (as an ETRN would)
    res = etrnctl.run("flush", "--id", ids["b1"], "--json")
    assert res.rc == 0 and [(x["domain"], x["messages"]) for x in res.json()] == [("other.test", 2)], res
    got = other.wait_for(2, 20)
    assert sorted(subject_of(t.data) for t in got) == ["b1", "mixed"]
    assert site.count() == 3
    res = etrnctl.run("flush", "--id", "AAAAAAAAAAAAAA")
    assert res.rc == EX_NOINPUT, res
    # --all
    res = etrnctl.run("flush", "--all")
    assert res.rc == 0, res
    wait_until(lambda: etrnctl.run("queue", "--count").out == "0\n", 10, what="queue empty")
    assert etrnctl.run("queue").out == "Mail queue is empty\n"


def test_hold_and_release(denv, etrnctl, tmp_path):
    r, site, other, ids = known_queue(denv, etrnctl, tmp_path)
    site.start()
    res = etrnctl.run("hold", ids["a1"])
    assert res.rc == 0 and res.out == "held: 1\n", res
    res = etrnctl.run("queue")
    assert re.search(r"(?m)^%s! " % ids["a1"], res.out) and re.search(r"(?m)^%s  " % ids["a2"], res.out), res
    assert etrnctl.run("queue", "--held", "--ids-only").out.split() == [ids["a1"]]
    rec = [x for x in etrnctl.run("queue", "--json").json() if x["queue_id"] == ids["a1"]][0]
    assert rec["queue_name"] == "hold" and rec["recipients"][0]["held"] is True

    # a held message stays put through a flush
    assert etrnctl.run("flush", "example.org").rc == 0
    got = site.wait_for(2, 20)
    assert sorted(subject_of(t.data) for t in got) == ["a2", "mixed"]
    runs_over(etrnctl, "example.org")
    assert site.count() == 2

    res = etrnctl.run("release", ids["a1"])
    assert res.rc == 0 and res.out == "released: 1\n", res
    assert etrnctl.run("queue", "--held", "--count").out == "0\n"
    assert etrnctl.run("flush", "example.org").rc == 0
    assert [subject_of(t.data) for t in site.wait_for(3, 20)][-1] == "a1"

    # by domain
    res = etrnctl.run("hold", "--domain", "other.test", "--json")
    assert res.rc == 0 and res.json()[0]["held"] >= 2, res
    assert sorted(etrnctl.run("queue", "--held", "--ids-only").out.split()) == sorted([ids["b1"], ids["mixed"]])
    assert etrnctl.run("release", "--domain", "other.test").rc == 0
    assert etrnctl.run("queue", "--held", "--count").out == "0\n"


def test_delete_ids_from_stdin_and_all(denv, etrnctl, tmp_path):
    r, site, other, ids = known_queue(denv, etrnctl, tmp_path)
    # the pipeline operators know from postqueue | postsuper -d -
    listing = etrnctl.run("queue", "--ids-only", "--sender", SENDER)
    assert sorted(listing.out.split()) == sorted([ids["a1"], ids["a2"], ids["mixed"]])
    res = etrnctl.run("delete", "-", input="# from queue --ids-only\n" + listing.out + "\n")
    assert res.rc == 0 and res.out == "deleted: 3\n", res
    assert etrnctl.run("queue", "--ids-only").out.split() == [ids["b1"]]
    assert r.queue.count() == 1

    res = etrnctl.run("delete", "-", input="not/an/id\n")
    assert res.rc == 65, res
    res = etrnctl.run("delete", "-", input="")
    assert res.rc == 0 and "nothing" in res.out, res

    res = etrnctl.run("delete", "ALL")
    assert res.rc == 0 and res.out == "deleted: 1\n", res
    assert r.queue.count() == 0
    assert etrnctl.run("queue").out == "Mail queue is empty\n"


def test_hold_release_delete_take_all_domain_held_and_stdin(denv, etrnctl, tmp_path):
    """postsuper's habits: ALL, a domain, the held messages, ids on stdin, for
    hold, release and delete alike."""
    r, site, other, ids = known_queue(denv, etrnctl, tmp_path)
    res = etrnctl.run("hold", "ALL")
    assert res.rc == 0 and res.out == "held: 4\n", res
    assert etrnctl.run("queue", "--held", "--count").out == "4\n"
    res = etrnctl.run("release", "ALL")
    assert res.rc == 0 and res.out == "released: 4\n", res
    assert etrnctl.run("queue", "--held", "--count").out == "0\n"

    res = etrnctl.run("hold", "-", input=ids["a1"] + "\n" + ids["b1"] + "\n")
    assert res.rc == 0 and res.out == "held: 2\n", res
    # --held: exactly the held messages
    res = etrnctl.run("release", "--held")
    assert res.rc == 0 and res.out == "released: 2\n", res
    assert etrnctl.run("hold", ids["a2"]).rc == 0
    res = etrnctl.run("delete", "--held")
    assert res.rc == 0 and res.out == "deleted: 1\n", res
    assert sorted(etrnctl.run("queue", "--ids-only").out.split()) == sorted([ids["a1"], ids["b1"], ids["mixed"]])
    res = etrnctl.run("delete", "--held")
    assert res.rc == 0 and "no held messages" in res.out, res
    res = etrnctl.run("delete", "--held", ids["a1"])
    assert res.rc == 64, res

    # --domain: the recipients in that domain; a message with none left goes
    res = etrnctl.run("delete", "--domain", "other.test")
    assert res.rc == 0, res
    left = etrnctl.run("queue", "--json").json()
    assert sorted(m["queue_id"] for m in left) == sorted([ids["a1"], ids["mixed"]]), left
    mixed = [m for m in left if m["queue_id"] == ids["mixed"]][0]
    assert [x["address"] for x in mixed["recipients"]] == ["u4@example.org"], mixed


def test_mailq_link_lists_the_queue(denv, etrnctl, tmp_path):
    r, site, other, ids = known_queue(denv, etrnctl, tmp_path)
    link = tmp_path / "bin" / "mailq"
    link.parent.mkdir()
    os.symlink(etrnctl.path, str(link))
    env = dict(os.environ, ETRNCTL_SOCKET=etrnctl.socket)
    p = subprocess.run([str(link)], env=env, capture_output=True, text=True, timeout=30)
    q = etrnctl.run("queue")
    assert p.returncode == 0 and p.stdout == q.out, (p, q)
    assert "-- " in p.stdout and ids["a1"] in p.stdout
    p = subprocess.run([str(link), "--count"], env=env, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and p.stdout == "4\n", p


def test_domains_table_fits_80_columns(denv, etrnctl, tmp_path):
    long = "a-rather-long-customer-domain-name-for-the-table.example"
    site = denv.sink("site", start=False)
    r = ctl_relayd(denv, etrnctl, tmp_path, {long: {"mode": "hold", "route": route(site)}})
    with Client(r) as c:
        c.send(SENDER, ["u@" + long], message("long"))
    wide = etrnctl.run("domains", "--wide")
    assert wide.rc == 0 and re.search(r"(?m)^%s +hold +127" % re.escape(long), wide.out), wide
    res = etrnctl.run("domains")
    assert res.rc == 0, res
    lines = res.out.splitlines()
    assert max(len(l) for l in lines) <= 80, res
    # the cut domain is marked, the numbers are whole
    row = [l for l in lines if l.startswith(long[:8])][0]
    assert "~" in row.split()[0] and row.split()[1:4] == ["hold", "1", wide.out.split("\n")[1].split()[4]], res
    assert etrnctl.run("domains", "--json").json()[0]["domain"] == long


def test_delete_many_ids_in_batches(denv, etrnctl, tmp_path):
    """More ids than fit the protocol's 64 KiB line: several requests, one sum."""
    site = denv.sink("site", start=False)
    r = ctl_relayd(denv, etrnctl, tmp_path, {"example.org": {"mode": "hold", "route": route(site)}})
    with Client(r) as c:
        real = [c.send(SENDER, ["u@example.org"], message("d%d" % i)) for i in range(3)]
    fake = ["Z%013d" % i for i in range(5000)]  # 5000 * 18 bytes > 64 KiB
    res = etrnctl.run("-v", "delete", "-", input="\n".join(fake + real) + "\n")
    assert res.rc == 0 and res.out == "deleted: 3\n", res
    assert len(re.findall(r"-> delete ", res.err)) >= 2, res.err[:500]
    assert r.queue.count() == 0


def test_requeue_and_bounce(denv, etrnctl, tmp_path):
    port = denv.common_port(["127.0.0.1"])
    back = denv.sink("sender-mta", port=port)
    d = denv.dns(mx=[("sender.test", "mx.sender.test", 10)], hosts={"mx.sender.test": "127.0.0.1"})
    site = denv.sink("site")
    site.behaviour.rcpt = lambda a: (450, "4.2.0 <%s>: mailbox busy" % a)
    r = ctl_relayd(denv, etrnctl, tmp_path, {"example.org": {"mode": "hold", "route": route(site)}},
                   dns_servers=d.server, delivery_port=str(port), connect_timeout="2s")
    with Client(r) as c:
        q1 = c.send(SENDER, ["u1@example.org"], message("r1"))
        q2 = c.send(SENDER, ["u2@example.org"], message("r2"))
    # a failed attempt: the site answers 450 to every recipient
    assert etrnctl.run("flush", "example.org").rc == 0
    wait_until(lambda: all(x["attempts"] >= 1 for x in etrnctl.run("queue", "--json").json()), 20,
               what="a failed attempt")
    rec = etrnctl.run("queue", "--json").json()[0]
    assert "450 4.2.0" in rec["recipients"][0]["delay_reason"], rec
    res = etrnctl.run("queue")
    # the delay reason above the recipient, as in mailq
    assert re.search(r"(?m)^ {46}\(.*450 4\.2\.0 <u1@example\.org>: mailbox busy.*\)\n {46}u1@example\.org$",
                     res.out), res
    assert "attempts=1" in etrnctl.run("show", q1).out

    res = etrnctl.run("requeue", q1)
    assert res.rc == 0 and res.out == "requeued: 1\n", res
    recs = {x["queue_id"]: x for x in etrnctl.run("queue", "--json").json()}
    assert recs[q1]["attempts"] == 0 and recs[q2]["attempts"] >= 1
    assert etrnctl.run("requeue", "--all").rc == 0
    assert all(x["attempts"] == 0 for x in etrnctl.run("queue", "--json").json())

    res = etrnctl.run("bounce", q2)
    assert res.rc == 0 and res.out == "bounced: 1\n", res
    (b,) = back.wait_for(1, 20, "the DSN for the bounced message")
    assert b.mail_from == "" and b.rcpt_addrs == [SENDER]
    assert b"returned by the operator" in b.data
    wait_until(lambda: etrnctl.run("queue", "--ids-only").out.split() == [q1], 10, what="bounced one gone")


def check_prometheus_text(text):
    """The text exposition format (Prometheus 0.0.4) node_exporter's textfile
    collector reads, checked here in full rather than by an optional tool:
    each metric's HELP then TYPE once, then all its samples together; valid
    metric names; label values using only the backslash, quote and newline
    escapes; no sample twice; an integer value; a final newline."""
    assert text.endswith("\n"), repr(text[-50:])
    name_re = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
    seen, current, typed, samples = set(), None, set(), set()
    for line in text[:-1].split("\n"):
        m = re.match(r"# (HELP|TYPE) (%s) (.*)$" % name_re, line)
        if m:
            if m.group(1) == "HELP":
                assert m.group(2) not in seen, "metric %s twice" % m.group(2)
                assert not re.search(r"\\[^\\n]", m.group(3)), line
                seen.add(m.group(2))
                current = m.group(2)
            else:
                assert m.group(2) == current and m.group(2) not in typed, line
                assert m.group(3) in ("counter", "gauge"), line
                typed.add(m.group(2))
            continue
        assert not line.startswith("#") and line.strip() == line and line, "stray line %r" % line
        m = re.match(r'^(%s)(\{domain="(?:[^"\\\n]|\\[\\"n])*"\})? (0|[1-9][0-9]*)$' % name_re, line)
        assert m and m.group(1) == current and current in typed, line
        key = (m.group(1), m.group(2))
        assert key not in samples, "sample twice: %r" % line
        samples.add(key)
    assert typed == seen, seen - typed
    return seen


def test_stats_text_json_and_prometheus_format(denv, etrnctl, tmp_path):
    r, site, other, ids = known_queue(denv, etrnctl, tmp_path)
    recs = etrnctl.run("stats", "--json").json()
    total = [x for x in recs if x["domain"] == ""]
    assert len(total) == 1 and total[0]["queue_messages"] == 4, recs

    res = etrnctl.run("stats")
    assert res.rc == 0, res
    assert re.search(r"(?m)^DOMAIN +RECEIVED +DELIVERED +DEFERRED +BOUNCED +ETRN +OVERQUOTA$", res.out), res
    assert re.search(r"(?m)^queue: 4 messages, %d bytes; connections: \d+; uptime: \d+s$"
                     % total[0]["queue_bytes"], res.out), res
    for x in recs:
        if x["domain"]:
            assert re.search(r"(?m)^%s +%d +%d +%d +%d +%d +%d$" % (
                re.escape(x["domain"]), x["received"], x["delivered"], x["deferred"], x["bounced"], x["etrn"],
                x["quota_refused"]), res.out), res
    assert re.search(r"(?m)^storage: \d+ bytes free, reserve \d+ bytes; refused for space: 0$", res.out), res

    res = etrnctl.run("stats", "--prometheus")
    assert res.rc == 0, res
    metrics = check_prometheus_text(res.out)
    assert {"relayd_received_total", "relayd_delivered_total", "relayd_deferred_total", "relayd_bounced_total",
            "relayd_etrn_total", "relayd_queue_messages", "relayd_queue_bytes", "relayd_connections",
            "relayd_uptime_seconds", "relayd_quota_refused_total", "relayd_free_bytes",
            "relayd_queue_minfree_bytes"} <= metrics, res
    assert "# TYPE relayd_delivered_total counter\n" in res.out
    assert re.search(r"(?m)^relayd_queue_messages 4$", res.out), res
    assert etrnctl.run("stats", "--prometheus", "--json").rc == EX_USAGE


def test_stats_count_per_domain(denv, etrnctl, tmp_path):
    r, site, other, ids = known_queue(denv, etrnctl, tmp_path)
    site.start()
    assert etrnctl.run("etrn", "-H", relay_arg(r), "example.org").rc == 0
    site.wait_for(3, 20)
    wait_until(lambda: etrnctl.run("queue", "--count").out == "2\n", 10, what="example.org drained")

    def counted():
        recs = {x["domain"]: x for x in etrnctl.run("stats", "--json").json()}
        return recs.get("example.org", {}).get("delivered") == 4 and recs

    try:
        recs = wait_until(counted, 10, what="relayd counting the 4 deliveries to example.org")
    except AssertionError as e:
        raise AssertionError("%s; relayd's stats say: %s" % (e, etrnctl.run("stats", "--json").out))
    assert recs["example.org"]["received"] == 4 and recs["example.org"]["etrn"] == 1
    assert recs["other.test"]["received"] == 2 and recs["other.test"]["delivered"] == 0

    res = etrnctl.run("stats", "--prometheus")
    check_prometheus_text(res.out)
    assert 'relayd_delivered_total{domain="example.org"} 4\n' in res.out, res
    assert 'relayd_received_total{domain="other.test"} 2\n' in res.out, res
    assert re.search(r"(?m)^example\.org +4 +4 +\d+ +0 +1 +0$", etrnctl.run("stats").out)


def test_check_nagios_style(denv, etrnctl, tmp_path):
    r, site, other, ids = known_queue(denv, etrnctl, tmp_path)
    res = etrnctl.run("check")
    assert res.rc == 0, res
    assert re.match(r"RELAYD OK - 4 messages queued, oldest \d+s \((example\.org|other\.test)\) \| messages=4;;;0 "
                    r"oldest_age=\d+s;;;0\n$", res.out), res
    res = etrnctl.run("check", "--warn-count", "4", "--crit-count", "10")
    assert res.rc == 1 and res.out.startswith("RELAYD WARNING - ") and "messages=4;4;10;0" in res.out, res
    res = etrnctl.run("check", "--warn-count", "2", "--crit-count", "3")
    assert res.rc == 2 and res.out.startswith("RELAYD CRITICAL - "), res
    res = etrnctl.run("check", "--warn-age", "0", "--crit-age", "1h")
    assert res.rc == 1, res
    res = etrnctl.run("check", "--warn-age", "1h", "--crit-age", "1d", "--warn-count", "100")
    assert res.rc == 0 and "oldest_age=" in res.out and ";3600;86400;0" in res.out, res
    assert res.out.count("\n") == 1
    res = etrnctl.run("check", "--warn-count", "many")
    assert res.rc == 3 and res.out.startswith("RELAYD UNKNOWN"), res
    res = etrnctl.run("check", "-S", str(tmp_path / "nosuch.sock"))
    assert res.rc == 2 and res.out.startswith("RELAYD CRITICAL - relayd is not running"), res


def test_reload_and_relayd_not_running(denv, etrnctl, tmp_path):
    r, site, other, ids = known_queue(denv, etrnctl, tmp_path)
    off = r.log_size()
    res = etrnctl.run("reload")
    assert res.rc == 0, res
    r.wait_log(r"(?i)reload", since=off)
    assert etrnctl.run("reload", "--json").json() == [{"reloaded": True}]
    res = etrnctl.run("-S", str(tmp_path / "nosuch.sock"), "queue")
    assert res.rc == EX_UNAVAILABLE and "is relayd running?" in res.err, res
    r.stop()
    res = etrnctl.run("queue")
    assert res.rc == EX_UNAVAILABLE, res


def test_socket_permissions(denv, etrnctl, public_tmpdir):
    import grp
    import pwd

    assert os.geteuid() == 0, "needs root to run etrnctl as another user"
    nobody = pwd.getpwnam("nobody")
    ngroup = grp.getgrgid(nobody.pw_gid).gr_name
    site = denv.sink("site", start=False)
    sock = os.path.join(public_tmpdir, "ctl", "control.sock")
    r = denv.relayd(domains={"example.org": {"mode": "hold", "route": route(site)}}, control_socket=sock,
                    control_socket_mode="0660", control_socket_group=ngroup)
    with Client(r) as c:
        qid = c.send(SENDER, ["u@example.org"], message("p1"))
    etrnctl.socket = sock
    # the build tree may sit in a 0700 directory (a mktemp -d clone):
    # nobody runs a copy it can reach
    etrnctl.path = shutil.copy(etrnctl.path, os.path.join(public_tmpdir, "etrnctl"))
    os.chmod(etrnctl.path, 0o755)
    as_nobody = (nobody.pw_uid, nobody.pw_gid)
    # in the socket's group: reading and flushing
    res = etrnctl.run("queue", "--ids-only", user=as_nobody)
    assert res.rc == 0 and res.out.split() == [qid], res
    assert etrnctl.run("flush", "example.org", user=as_nobody).rc == 0
    assert etrnctl.run("stats", user=as_nobody).rc == 0
    # not the changes that stay with root
    for args in (["delete", qid], ["hold", qid], ["release", qid], ["requeue", "--all"], ["reload"],
                 ["bounce", qid]):
        res = etrnctl.run(*args, user=as_nobody)
        assert res.rc == EX_NOPERM, res
        assert "denied" in res.err, res
    assert r.queue.count() == 1
    # root may
    assert etrnctl.run("hold", qid).rc == 0
    # outside the group: the socket itself refuses
    res = etrnctl.run("queue", user=(nobody.pw_uid, grp.getgrnam("daemon").gr_gid))
    assert res.rc == EX_NOPERM, res
    assert "Permission denied" in res.err, res
