# conftest: pytest fixtures for the integration suite. `relayd_factory` starts
# real relayd processes (see relayd_fixture.py) and, at teardown, stops exactly
# those (by PID) and fails the test if one crashed or a sanitizer spoke.
# Every test also gets a hard time limit so a hung daemon cannot hang `make check`.

import os
import shutil
import signal
import subprocess
import tempfile

import pytest

from relayd_fixture import Relayd, relayd_binary

DEFAULT_TIME_LIMIT = 90


def pytest_configure(config):
    config.addinivalue_line("markers", "time_limit(seconds): hard limit for one test")


@pytest.fixture(autouse=True)
def _time_limit(request):
    """SIGALRM raises in the test's main thread when it runs too long."""
    m = request.node.get_closest_marker("time_limit")
    limit = m.args[0] if m else DEFAULT_TIME_LIMIT

    def expired(signum, frame):
        raise TimeoutError("test exceeded its time limit of %ss" % limit)

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(limit)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="session")
def relayd_path():
    path = relayd_binary()
    assert os.access(path, os.X_OK), "relayd binary not found at %s (set RELAYD)" % path
    return path


@pytest.fixture
def mounts():
    """Mount points a test created; unmounted after every relayd has stopped
    (relayd_factory depends on this fixture, so it is torn down first)."""
    points = []
    yield points
    errors = []
    for p in reversed(points):
        r = subprocess.run(["umount", p], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        if r.returncode != 0:
            errors.append("umount %s: %s" % (p, r.stdout.decode(errors="replace")))
    assert not errors, errors


@pytest.fixture
def relayd_factory(tmp_path, relayd_path, mounts):
    """start(**config) -> a running Relayd; all of them are checked and stopped
    at teardown."""
    started = []

    def start(name="relayd", workdir=None, **kw):
        d = workdir or str(tmp_path / ("%s%d" % (name, len(started))))
        r = Relayd(d, **kw)
        started.append(r)
        r.start()
        return r

    yield start

    problems = []
    for r in started:
        mine = []
        try:
            if r.proc is not None:
                rc = r.stop()
                if rc != 0:
                    mine.append("relayd (pid %d) exited with status %s after SIGTERM" % (r.pid, rc))
        except AssertionError as e:
            mine.append(str(e))
        mine += r.check_health()
        if mine:
            problems += mine + ["log tail of %s:\n%s" % (r.logfile, r.log_tail(80))]
    assert not problems, "\n".join(problems)


@pytest.fixture
def relayd(relayd_factory):
    """relayd with the default config (example.org hold, sub.test with subdomains)."""
    return relayd_factory()


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory):
    """A self-signed certificate for relay.test, made with the openssl CLI."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = str(d / "cert.pem"), str(d / "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=relay.test",
         "-addext", "subjectAltName=DNS:relay.test"],
        check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60,
    )
    return cert, key


@pytest.fixture(scope="session")
def tls_ca(tmp_path_factory):
    """A test CA and a server certificate it signed, valid for IP:127.0.0.1
    and relay.test (so a client connecting to 127.0.0.1 can verify it), plus
    a second CA that signed nothing here. Made with the openssl CLI. Returns
    a dict: ca, cert, key, other_ca (file names)."""
    d = tmp_path_factory.mktemp("tlsca")
    f = {k: str(d / (k + ".pem")) for k in ("ca", "ca_key", "cert", "key", "csr", "other_ca",
                                            "other_ca_key")}
    ext = d / "ext.cnf"
    ext.write_text("basicConstraints = critical, CA:FALSE\n"
                   "keyUsage = critical, digitalSignature\n"
                   "extendedKeyUsage = serverAuth\n"
                   "subjectAltName = IP:127.0.0.1, DNS:relay.test\n")

    def openssl(*args):
        subprocess.run(["openssl"] + list(args), check=True, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=60)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca, key, cn in (("ca", "ca_key", "relayd test CA"), ("other_ca", "other_ca_key", "other CA")):
        openssl("req", "-x509", *ec, "-keyout", f[key], "-out", f[ca], "-days", "2",
                "-subj", "/CN=" + cn, "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    openssl("req", "-new", *ec, "-keyout", f["key"], "-out", f["csr"], "-subj", "/CN=relay.test")
    openssl("x509", "-req", "-in", f["csr"], "-CA", f["ca"], "-CAkey", f["ca_key"],
            "-CAcreateserial", "-out", f["cert"], "-days", "2", "-extfile", str(ext))
    return f


@pytest.fixture
def public_tmpdir():
    """A temp dir outside pytest's 0700 tree, traversable by an unprivileged user."""
    d = tempfile.mkdtemp(prefix="relayd-itest-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def module_relayd(tmp_path_factory, relayd_path):
    """One default relayd shared by a module's tests (for long parametrized lists).
    Tests using it must not depend on the queue being empty."""
    r = Relayd(str(tmp_path_factory.mktemp("shared")))
    r.start()
    yield r
    problems = []
    try:
        rc = r.stop()
        if rc != 0:
            problems.append("relayd exited with status %s after SIGTERM" % rc)
    except AssertionError as e:
        problems.append(str(e))
    problems += r.check_health()
    assert not problems, "\n".join(problems + ["log tail:\n" + r.log_tail(80)])


# --- delivery, ETRN and bounces (issue 3) ------------------------------------------------
# delivery_env bundles what those tests start besides relayd: recording sinks
# (sink.py), dnsmasq (dns.py) and private Postfix and Exim instances
# (postfix_site.py, exim_site.py).
# It asks for its helpers before relayd_factory, so at teardown every relayd
# is stopped first and the sites it was talking to after it.


class DeliveryEnv:
    def __init__(self, tmp_path, start_relayd):
        self.tmp = tmp_path
        self._start_relayd = start_relayd
        self.sinks = []
        self.dnses = []
        self.postfixes = []
        self.exims = []

    def sink(self, name="sink", host="127.0.0.1", port=0, start=True):
        """A recording SMTP sink (started unless start=False: then only its port
        is chosen, so a route can name it while the site is still down)."""
        from sink import Sink
        from relayd_fixture import free_port

        s = Sink(host=host, port=port or free_port(host), name=name)
        self.sinks.append(s)
        if start:
            s.start()
        return s

    def common_port(self, hosts):
        """A port free on every one of hosts (loopback addresses): relayd's
        delivery_port, shared by every MX sink of a test."""
        import socket
        from relayd_fixture import free_port

        for _ in range(20):
            port = free_port(hosts[0])
            try:
                for h in hosts:
                    with socket.socket() as s:
                        s.bind((h, port))
                return port
            except OSError:
                continue
        raise AssertionError("no port free on all of %r" % (hosts,))

    def dns(self, **records):
        from dns import Dnsmasq

        d = Dnsmasq(str(self.tmp / ("dns%d" % len(self.dnses))), **records)
        self.dnses.append(d)
        return d.start()

    def postfix(self, domain, users=("user",)):
        from postfix_site import PostfixSite

        p = PostfixSite(domain, users)
        self.postfixes.append(p)
        p.setup()
        return p.start()

    def exim(self, domain, users=("user",)):
        from exim_site import EximSite

        e = EximSite(domain, users)
        self.exims.append(e)
        e.setup()
        return e.start()

    def relayd(self, **kw):
        return self._start_relayd(**kw)

    def close(self):
        for s in self.sinks:
            s.stop()
        for d in self.dnses:
            d.stop()
        for p in self.postfixes:
            p.teardown()
        for e in self.exims:
            e.teardown()
        # every delivery test also checks that relayd pipelines by the rules
        broken = ["%s: %s" % (s.name, v) for s in self.sinks for v in s.violations()]
        assert not broken, broken


@pytest.fixture
def delivery_env(tmp_path):
    env = DeliveryEnv(tmp_path, None)
    yield env
    env.close()


@pytest.fixture
def denv(delivery_env, relayd_factory):
    """delivery_env with relayd_factory as env.relayd(...); relayds stop first."""
    delivery_env._start_relayd = relayd_factory
    return delivery_env
