# test_cli: relayd's command line and config checking as an operator uses them:
# -V, -t, -n (and that -n output reads back), bad configs naming file:line and
# exiting 78, usage errors 64, relative paths, listening on IPv4 and IPv6.

import os
import re

import pytest

from relayd_fixture import Queue, Relayd, run_relayd, queue_id_of, make_message, free_port

EX_USAGE = 64
EX_CONFIG = 78


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def good_config(tmp_path, extra=""):
    r = Relayd(str(tmp_path), port=2525)
    r.extra = extra
    r.write_config()
    return r.conf


def test_version():
    for flag in ("-V", "--version"):
        p = run_relayd([flag])
        assert p.returncode == 0, p
        assert p.stdout.decode().strip() == "relayd 0.1.0", p


def test_usage_error_exits_64():
    p = run_relayd(["-x"])
    assert p.returncode == EX_USAGE, p
    assert p.stderr, "a usage error should say something on stderr"


def test_check_config_ok(tmp_path):
    conf = good_config(tmp_path)
    p = run_relayd(["-t", "-f", conf])
    assert p.returncode == 0, p
    assert "relayd: configuration %s is valid" % conf in p.stderr.decode(), p
    # -t must not create the queue: it only checks
    assert not os.path.exists(str(tmp_path / "queue" / "queue.db"))


def keys_of(text):
    """The key = value lines of a printed configuration, comments dropped."""
    return [l for l in text.splitlines() if l.strip() and not l.lstrip().startswith("#")]


def test_print_all_config_reads_back(tmp_path):
    conf = good_config(tmp_path)
    p = run_relayd(["-n", "-a", "-f", conf])
    assert p.returncode == 0, p
    out = p.stdout.decode()
    assert re.search(r"(?m)^hostname\s*=\s*relay\.test\s*$", out), out
    assert re.search(r"(?m)^listen\s*=\s*127\.0\.0\.1:2525\s*$", out), out
    # every key with its value, defaults included
    for key, val in (("max_message_size", None), ("max_connections", "200"), ("max_connections_per_ip", "50"),
                     ("max_recipients", "1000"), ("max_errors", "10"), ("hopcount_limit", "100"),
                     ("command_timeout", None), ("data_timeout", None)):
        m = re.search(r"(?m)^%s\s*=\s*(\S.*?)\s*$" % key, out)
        assert m, "relayd -n -a does not print %s:\n%s" % (key, out)
        if val:
            assert m.group(1) == val, (key, m.group(1))
    assert re.search(r"(?m)^\[domain example\.org\]\s*$", out), out
    assert re.search(r"(?m)^\[domain sub\.test\]\s*$", out), out
    # the printed config is itself a valid config that prints the same way
    d2 = tmp_path / "again"
    d2.mkdir()
    again = write(str(d2 / "printed.conf"), out)
    p2 = run_relayd(["-t", "-f", again])
    assert p2.returncode == 0, p2
    p3 = run_relayd(["-n", "-a", "-f", again])
    assert p3.returncode == 0, p3
    assert keys_of(p3.stdout.decode()) == keys_of(out)


def test_print_config_shows_only_what_differs(tmp_path):
    """relayd -n is postconf -n: the keys whose value is not the default, and
    read back with the defaults filled in it is the same configuration."""
    r = Relayd(str(tmp_path), port=2525, max_errors=7, max_connections=200)
    r.write_config()
    conf = r.conf
    p = run_relayd(["-n", "-f", conf])
    assert p.returncode == 0, p
    out = p.stdout.decode()
    lines = keys_of(out)
    assert "max_errors = 7" in lines, out
    assert "hostname = relay.test" in lines, out
    # set to its default value, or never set: not printed
    assert not [l for l in lines if l.startswith(("max_connections ", "hopcount_limit ", "data_timeout "))], out
    assert "[domain example.org]" in lines, out
    full = run_relayd(["-n", "-a", "-f", conf]).stdout.decode()
    assert len(lines) < len(keys_of(full)), out
    d2 = tmp_path / "again"
    d2.mkdir()
    again = write(str(d2 / "printed.conf"), out)
    p = run_relayd(["-n", "-a", "-f", again])
    assert p.returncode == 0, p
    assert keys_of(p.stdout.decode()) == keys_of(full)


BAD_CONFIGS = [
    ("unknown_key", "frobnicate = yes\n"),
    ("unknown_domain_key", "[domain bad.test]\nfrobnicate = yes\n"),
    ("bad_duration", "command_timeout = 5 fortnights\n"),
    ("bad_size", "max_message_size = lots\n"),
    ("bad_number", "max_connections = many\n"),
    ("bad_mode", "[domain bad.test]\nmode = sometimes\n"),
    ("bad_subdomains", "[domain bad.test]\nsubdomains = perhaps\n"),
    ("bad_section", "[frobnicate bad.test]\n"),
    ("no_equals", "hostname relay.test\n"),
    ("bad_listen", "listen = 127.0.0.1:99999\n"),
    ("bad_log_level", "log_level = chatty\n"),
    ("max_recipients_below_100", "max_recipients = 50\n"),
]


@pytest.mark.parametrize("name,text", BAD_CONFIGS, ids=[b[0] for b in BAD_CONFIGS])
def test_bad_config_names_file_and_line(tmp_path, name, text):
    good = Relayd(str(tmp_path), port=2525, extra="").config_text()
    # the bad lines come after the good ones so the line number is not 1
    conf = write(str(tmp_path / "relayd.conf"), good + "\n" + text)
    bad_line = len((good + "\n").splitlines()) + len(text.splitlines())
    for args in (["-t", "-f", conf], ["-d", "-f", conf]):
        p = run_relayd(args, timeout=5)
        err = p.stderr.decode()
        assert p.returncode == EX_CONFIG, (args, p.returncode, err)
        # the problem is on the last line of `text`, or (for a section error) its first
        first_line = len((good + "\n").splitlines()) + 1
        lines = {str(bad_line), str(first_line)}
        m = re.search(re.escape(conf) + r":(\d+): \S", err)
        assert m, "stderr does not name %s:LINE: problem:\n%s" % (conf, err)
        assert m.group(1) in lines, (m.group(1), lines, err)


def test_bad_config_in_included_file(tmp_path):
    inc = write(str(tmp_path / "customers.conf"), "[domain c1.test]\nmode = hold\nfrobnicate = 1\n")
    good = Relayd(str(tmp_path), port=2525).config_text()
    conf = write(str(tmp_path / "relayd.conf"), good + "include = customers.conf\n")
    p = run_relayd(["-t", "-f", conf])
    assert p.returncode == EX_CONFIG, p
    assert re.search(re.escape(inc) + r":3: \S", p.stderr.decode()), p.stderr.decode()


def test_include_directory_adds_domains(relayd_factory, tmp_path):
    incdir = tmp_path / "d" / "domains.d"  # relative to the config file's directory
    incdir.mkdir(parents=True)
    write(str(incdir / "a.conf"), "[domain inc-a.test]\nmode = hold\n")
    write(str(incdir / "b.conf"), "[domain inc-b.test]\nmode = retry\n")
    r = relayd_factory(extra="include = domains.d\n", workdir=str(tmp_path / "d"))
    c = r.raw()
    c.ehlo()
    c.expect("MAIL FROM:<a@b.test>", 250)
    c.expect("RCPT TO:<u@inc-a.test>", 250)
    c.expect("RCPT TO:<u@inc-b.test>", 250)
    c.expect("RCPT TO:<u@inc-c.test>", 550)


def test_missing_config_file(tmp_path):
    missing = str(tmp_path / "nope.conf")
    p = run_relayd(["-t", "-f", missing])
    assert p.returncode != 0
    assert missing in p.stderr.decode(), p


def test_relative_database_path_and_dir_created(relayd_factory, tmp_path):
    """database relative to the config file's directory; its directory is created."""
    work = tmp_path / "confdir"
    db = str(work / "spool" / "queue.db")
    assert not os.path.exists(os.path.dirname(db))
    r = relayd_factory(workdir=str(work), database="spool/queue.db")
    r.wait_log(r"relayd ready: .*, queue %s$" % re.escape(db))
    c = r.raw()
    c.ehlo()
    qid = queue_id_of(c.send_message("a@b.test", ["u@example.org"], make_message()))
    c.cmd("QUIT")
    assert Queue(db).message(qid) is not None


def test_listen_ipv4_and_ipv6(relayd_factory):
    p4, p6 = free_port("127.0.0.1"), free_port("::1")
    r = relayd_factory(listen="127.0.0.1:%d, [::1]:%d" % (p4, p6))
    log = r.log_text()
    for host, port in (("127.0.0.1", p4), ("::1", p6)):
        from relayd_fixture import RawSMTP

        c = RawSMTP(port, host=host)
        r.clients.append(c)
        assert c.greeting.code == 220, c.greeting
        c.ehlo()
        qid = queue_id_of(c.send_message("a@b.test", ["u@example.org"], make_message(subject=host)))
        m = r.queue.message(qid)
        assert m["client_addr"] in (host, "[%s]" % host, "IPv6:" + host), m["client_addr"]
        c.cmd("QUIT")
    assert re.search(r"relayd ready: .*, listening on 127\.0\.0\.1:%d, \[::1\]:%d, queue " % (p4, p6), log), log


# ---- relayd -t: what would make a start fail (issue 9) ---------------------

EX_NOUSER = 67
EX_CANTCREAT = 73


def test_check_unknown_user_exits_67_as_the_start_does(tmp_path):
    r = Relayd(str(tmp_path), port=free_port(), user="nosuchuser")
    r.write_config()
    p = run_relayd(["-t", "-f", r.conf])
    assert p.returncode == EX_NOUSER, p
    assert "relayd: user nosuchuser: no such user" in p.stderr.decode(), p
    # the start fails the same way, before it binds or opens anything
    p = run_relayd(["-d", "-f", r.conf])
    assert p.returncode == EX_NOUSER, p
    assert "user nosuchuser: no such user" in p.stderr.decode(), p
    assert not os.path.exists(str(tmp_path / "queue"))


def test_check_tls_key_unreadable_by_user(tmp_path):
    assert os.geteuid() == 0, "this test judges another user's access: run the suite as root"
    import shutil
    import tempfile
    # pytest's tmp_path is under a 0700 directory nobody cannot enter
    tmp_path = __import__("pathlib").Path(tempfile.mkdtemp(prefix="relayd-check-", dir="/tmp"))
    try:
        check_key_unreadable(tmp_path)
    finally:
        shutil.rmtree(str(tmp_path), ignore_errors=True)


def check_key_unreadable(tmp_path):
    key = tmp_path / "key.pem"
    cert = tmp_path / "cert.pem"
    import subprocess
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=relay.test",
                    "-days", "1", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    os.chmod(str(tmp_path), 0o755)
    os.chmod(str(cert), 0o644)
    os.chmod(str(key), 0o600)  # root's alone: nobody cannot read it after the drop
    r = Relayd(str(tmp_path), port=free_port(), user="nobody", tls_cert=str(cert), tls_key=str(key))
    r.write_config()
    p = run_relayd(["-t", "-f", r.conf])
    assert p.returncode == EX_CONFIG, p
    assert re.search(r"relayd: tls_key %s: not readable by user nobody" % re.escape(str(key)),
                     p.stderr.decode()), p
    assert "is valid" not in p.stderr.decode(), p
    os.chmod(str(key), 0o644)
    p = run_relayd(["-t", "-f", r.conf])
    assert p.returncode == 0, p


def test_check_database_directory_open_to_everyone(tmp_path):
    q = tmp_path / "queue"
    q.mkdir()
    os.chmod(str(q), 0o777)
    r = Relayd(str(tmp_path), port=free_port())
    r.write_config()
    p = run_relayd(["-t", "-f", r.conf])
    assert p.returncode == EX_CANTCREAT, p
    assert "is writable by everyone (mode 0777)" in p.stderr.decode(), p
    os.chmod(str(q), 0o755)
    p = run_relayd(["-t", "-f", r.conf])
    assert p.returncode == 0, p
    assert "relayd: warning: database" in p.stderr.decode() and "open to others (mode 0755)" in p.stderr.decode(), p
    os.chmod(str(q), 0o700)
    p = run_relayd(["-t", "-f", r.conf])
    assert p.returncode == 0, p
    assert "warning: database" not in p.stderr.decode(), p


def test_shipped_example_passes_check(tmp_path):
    """contrib/relayd.conf.example passes -t as shipped, once its user exists
    (README: create the user first); without that user it says so."""
    import pwd
    src = os.path.join(os.path.dirname(__file__), "..", "..", "contrib", "relayd.conf.example")
    text = open(src).read()
    conf = write(str(tmp_path / "relayd.conf"), text)
    try:
        pwd.getpwnam("relayd")
        has_user = True
    except KeyError:
        has_user = False
    p = run_relayd(["-t", "-f", conf])
    if has_user:
        assert p.returncode == 0, p
    else:
        assert p.returncode == EX_NOUSER, p
        assert "user relayd: no such user" in p.stderr.decode(), p
        conf = write(str(tmp_path / "relayd.conf"), text.replace("\nuser = relayd\n", "\nuser = nobody\n"))
        p = run_relayd(["-t", "-f", conf])
        assert p.returncode == 0, p
    assert "is valid" in p.stderr.decode(), p
