# test_etrnctl_auth: etrnctl's side of accounts (issue 8) against the real
# relayd: `etrnctl credentials` makes a line (password from a terminal without
# echo, or from stdin) that relayd reads and that SCRAM-SHA-256 (msmtp) and
# PLAIN/LOGIN (swaks) authenticate against, CRAM-MD5 not (534); `etrnctl etrn
# --user --password-file` authenticates before ETRN for a domain with
# etrn_access = auth: 0 for the owner, 77 without an account or with a wrong
# password, SCRAM by default, PLAIN only over --starttls.

import os
import pty
import select
import subprocess
import time

import pytest

from sink import Client, message
from test_etrnctl import Etrnctl, etrnctl_binary

PW = "correct horse; battery: staple"


@pytest.fixture
def ectl(tmp_path):
    path = etrnctl_binary()
    assert os.access(path, os.X_OK), "etrnctl binary not found at %s" % path
    return Etrnctl(path, tmp_path)


def make_line(ectl, name, *domains, password=PW):
    res = ectl.run("credentials", name, *domains, input=password + "\n")
    assert res.rc == 0, res
    assert res.err == "", res
    return res.out


def test_credentials_line_from_stdin_is_read_by_relayd(ectl, relayd_factory, tls_cert, tmp_path):
    line = make_line(ectl, "site1", "example.org", "sub.test")
    assert line.count("\n") == 1 and PW not in line
    name, rest = line.split(":", 1)
    assert name == "site1"
    assert rest.startswith("{SCRAM-SHA-256}65536,") and ";$y$" in rest
    assert rest.rstrip("\n").endswith(":example.org,sub.test")
    # two runs never give the same salts
    assert make_line(ectl, "site1", "example.org", "sub.test") != line
    creds = tmp_path / "credentials"
    creds.write_text(line)
    os.chmod(str(creds), 0o600)
    cert, key = tls_cert
    r = relayd_factory(credentials=str(creds), tls_cert=cert, tls_key=key)
    # SCRAM-SHA-256 with msmtp (no TLS needed)
    conf = tmp_path / "msmtprc"
    conf.write_text("account default\nhost 127.0.0.1\nport %d\ntimeout 20\ntls off\n"
                    "auth scram-sha-256\nuser site1\npassword %s\nfrom s@client.test\n" % (r.port, PW))
    os.chmod(str(conf), 0o600)
    p = subprocess.run(["msmtp", "-C", str(conf), "--debug", "u@example.org"], input=message("m"),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 0 and "235 2.7.0" in out, out
    # PLAIN and LOGIN over TLS against the yescrypt hash
    for mech in ("PLAIN", "LOGIN"):
        p = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % r.port, "--tls", "--auth", mech,
                            "--auth-user", "site1", "--auth-password", PW, "--quit-after", "AUTH",
                            "--timeout", "20"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        out = p.stdout.decode(errors="replace")
        assert "235 2.7.0" in out, out
    # CRAM-MD5 needs the password in clear, which the line does not keep: with
    # no other account, relayd does not even offer it
    p = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % r.port, "--auth", "CRAM-MD5",
                        "--auth-user", "site1", "--auth-password", PW, "--quit-after", "AUTH",
                        "--timeout", "20"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    out = p.stdout.decode(errors="replace")
    assert "250-AUTH SCRAM-SHA-256\n" in out and "requested type not available" in out, out
    # relayd -t says which mechanisms the account has
    from relayd_fixture import run_relayd
    err = run_relayd(["-t", "-f", r.conf]).stderr.decode()
    assert "account site1 can use SCRAM-SHA-256 SCRAM-SHA-256-PLUS PLAIN LOGIN" in err, err


def test_credentials_asks_twice_on_a_terminal_without_echo(ectl):
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(ectl.path, [ectl.path, "credentials", "site2", "other.test"], ectl.env())
    out = b""

    def read_until(marker, timeout=20):
        nonlocal out
        deadline = time.monotonic() + timeout
        while marker not in out:
            assert time.monotonic() < deadline, "no %r from etrnctl: %r" % (marker, out)
            r, _, _ = select.select([fd], [], [], 0.5)
            if r:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk

    read_until(b"Password: ")
    os.write(fd, b"t3rminal-secret\n")
    read_until(b"Password again: ")
    os.write(fd, b"t3rminal-secret\n")
    read_until(b":other.test")
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, out
    assert b"t3rminal-secret" not in out, out  # never echoed
    assert b"site2:{SCRAM-SHA-256}" in out


def test_credentials_refuses_bad_input(ectl):
    assert ectl.run("credentials", "site1").rc == 64
    assert ectl.run("credentials", "a b", "example.org", input="x\n").rc == 64
    assert ectl.run("credentials", "site1", "bad..domain", input="x\n").rc == 64
    res = ectl.run("credentials", "site1", "example.org", input="")
    assert res.rc == 65 and res.out == "", res
    res = ectl.run("credentials", "site1", "example.org", input="\n")
    assert res.rc == 65 and "empty password" in res.err, res


def etrn_env(denv, ectl, tmp_path, tls_cert=None):
    line = make_line(ectl, "site1", "example.org")
    creds = tmp_path / "credentials"
    creds.write_text(line + "site2:{plain}other-pw:other.test\n")
    os.chmod(str(creds), 0o600)
    site = denv.sink("site", start=False)
    kw = {}
    if tls_cert:
        kw = {"tls_cert": tls_cert[0], "tls_key": tls_cert[1]}
    r = denv.relayd(credentials=str(creds), domains={
        "example.org": {"mode": "hold", "route": "127.0.0.1:%d" % site.port, "etrn_access": "auth"},
        "other.test": {"mode": "hold", "etrn_access": "auth"}}, **kw)
    with Client(r) as c:
        for i in range(2):
            c.send("s@sender.test", ["u%d@example.org" % i], message("m%d" % i))
    site.start()
    pwfile = tmp_path / "pw"
    pwfile.write_text(PW + "\n")  # the line end is not part of the password
    os.chmod(str(pwfile), 0o600)
    return r, site, str(pwfile)


def test_etrn_with_user_and_password_file(denv, ectl, tmp_path):
    r, site, pwfile = etrn_env(denv, ectl, tmp_path)
    relay = "127.0.0.1:%d" % r.port
    res = ectl.run("etrn", "-H", relay, "example.org")
    assert res.rc == 77, res
    assert "530" in res.out + res.err, res
    bad = tmp_path / "bad"
    bad.write_text("wrong\n")
    res = ectl.run("etrn", "-H", relay, "--user", "site1", "--password-file", str(bad), "example.org")
    assert res.rc == 77 and "535" in res.out + res.err, res
    res = ectl.run("etrn", "-v", "-H", relay, "--user", "site1", "--password-file", pwfile, "example.org")
    assert res.rc == 0, res
    assert "AUTH SCRAM-SHA-256 as site1" in res.err, res
    assert PW not in res.err + res.out
    assert "253" in res.out or "2 " in res.out, res
    site.wait_for(2, 30, "the owner's two messages")
    assert "sasl_method=SCRAM-SHA-256, sasl_username=site1" in r.log_text()
    # another account: refused, 77
    other = tmp_path / "other"
    other.write_text("other-pw\n")
    res = ectl.run("etrn", "-H", relay, "--user", "site2", "--password-file", str(other), "example.org")
    assert res.rc == 77 and "459" in res.out + res.err, res
    # PLAIN is never sent in clear: without --starttls it is not usable
    res = ectl.run("etrn", "-H", relay, "--user", "site1", "--password-file", pwfile, "--mech", "PLAIN",
                   "example.org")
    assert res.rc == 69, res
    assert ectl.run("etrn", "-H", relay, "--user", "site1", "example.org").rc == 64


def test_etrn_user_scram_plus_over_starttls(denv, ectl, tmp_path, tls_cert):
    """Over TLS 1.3 the default is SCRAM-SHA-256-PLUS, bound to the TLS
    connection by its tls-exporter (RFC 9266)."""
    r, site, pwfile = etrn_env(denv, ectl, tmp_path, tls_cert)
    res = ectl.run("etrn", "-v", "-H", "127.0.0.1:%d" % r.port, "--starttls", "--user", "site1",
                   "--password-file", pwfile, "example.org")
    assert res.rc == 0, res
    assert "AUTH SCRAM-SHA-256-PLUS as site1" in res.err, res
    site.wait_for(2, 30)
    assert "sasl_method=SCRAM-SHA-256-PLUS, sasl_username=site1" in r.log_text()
    # the same account with plain SCRAM over TLS is fine too (the client says
    # it has no channel binding only when it has none: "n")
    res = ectl.run("etrn", "-H", "127.0.0.1:%d" % r.port, "--starttls", "--user", "site1",
                   "--password-file", pwfile, "--mech", "SCRAM-SHA-256", "example.org")
    assert res.rc == 0, res


def test_etrn_user_plain_over_starttls(denv, ectl, tmp_path, tls_cert):
    r, site, pwfile = etrn_env(denv, ectl, tmp_path, tls_cert)
    res = ectl.run("etrn", "-v", "-H", "127.0.0.1:%d" % r.port, "--starttls", "--user", "site1",
                   "--password-file", pwfile, "--mech", "PLAIN", "example.org")
    assert res.rc == 0, res
    assert "AUTH PLAIN as site1" in res.err, res
    site.wait_for(2, 30)
    assert "sasl_method=PLAIN, sasl_username=site1" in r.log_text()
