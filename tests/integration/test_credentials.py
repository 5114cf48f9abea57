# test_credentials: the accounts file (relayd.conf(5) "credentials") as the
# operator meets it: relayd -t lists each account's mechanisms and warns
# about a file others can read and about domains that are not relayed; a bad
# line stops start-up and reload without showing the secret.

import os
import signal

from relayd_fixture import Relayd, run_relayd

YESCRYPT = "$y$j9T$7EwUVl/XdHPnZmjKm7pxb.$mEzA6GbRuDW3l.3XHZa/ZZvQ3wYiL9fJwzVXW6ogy/9"


def write_creds(path, text, mode=0o600):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def test_check_lists_mechanisms_and_warns(tmp_path):
    creds = str(tmp_path / "creds")
    write_creds(creds, "# sites\nsite1:{plain}s3cret:example.org\n"
                "site2:%s:example.org,unrelayed.example\n" % YESCRYPT, 0o644)
    r = Relayd(str(tmp_path / "r"), credentials=creds)
    r.port = 2525
    r.write_config()
    p = run_relayd(["-t", "-f", r.conf])
    err = p.stderr.decode()
    assert p.returncode == 0, err
    assert "credentials %s:2: account site1 can use SCRAM-SHA-256 SCRAM-SHA-256-PLUS CRAM-MD5 PLAIN LOGIN" % creds in err
    assert "credentials %s:3: account site2 can use PLAIN LOGIN\n" % creds in err
    assert "warning: credentials %s: readable or writable by others" % creds in err
    assert "account site2 owns unrelayed.example, which is not a relay domain" in err
    assert "s3cret" not in err and YESCRYPT not in err

    os.chmod(creds, 0o600)
    err = run_relayd(["-t", "-f", r.conf]).stderr.decode()
    assert "readable or writable by others" not in err
    assert "is valid" in err


def test_bad_line_refuses_start_and_reload(tmp_path, relayd_factory):
    creds = str(tmp_path / "creds")
    write_creds(creds, "site1:t0psecret:example.org\n")
    r = Relayd(str(tmp_path / "bad"), credentials=creds)
    r.port = 2525
    r.write_config()
    p = run_relayd(["-t", "-f", r.conf])
    err = p.stderr.decode()
    assert p.returncode != 0
    assert "%s:1:" % creds in err and "t0psecret" not in err

    # a running relayd keeps its accounts when the new file is bad
    write_creds(creds, "site1:{plain}s3cret:example.org\n")
    r = relayd_factory(credentials=creds)
    off = r.log_size()
    write_creds(creds, "site1:{plain}s3cret:example.org\nsite2:t0psecret:example.org\n")
    r.signal(signal.SIGHUP)
    m = r.wait_log(r"%s:2: " % creds.replace(".", r"\."), since=off)
    assert "t0psecret" not in r.log_text()
    assert r.alive(), m


def test_check_warns_when_etrn_access_auth_cannot_be_met(tmp_path):
    r = Relayd(str(tmp_path / "r"), domains={"example.org": {"etrn_access": "auth"}})
    r.port = 2525
    r.write_config()
    err = run_relayd(["-t", "-f", r.conf]).stderr.decode()
    assert "warning: etrn_access lists auth but credentials is not set" in err, err
    creds = str(tmp_path / "creds")
    write_creds(creds, "site1:{plain}x:example.org\n")
    r = Relayd(str(tmp_path / "r2"), credentials=creds, smtpd_auth="no",
               domains={"example.org": {"etrn_access": "auth"}})
    r.port = 2525
    r.write_config()
    p = run_relayd(["-t", "-f", r.conf])
    err = p.stderr.decode()
    assert p.returncode == 0, err
    assert "warning: etrn_access lists auth but smtpd_auth = no" in err, err


def test_check_warns_about_unknown_and_legacy_hashes(tmp_path):
    creds = str(tmp_path / "creds")
    write_creds(creds, "good:%s:example.org\nbroken:$9$unknown$scheme:example.org\n"
                "old:$1$abcdefgh$0123456789abcdefghijkl:example.org\n" % YESCRYPT)
    r = Relayd(str(tmp_path / "r"), credentials=creds)
    r.port = 2525
    r.write_config()
    p = run_relayd(["-t", "-f", r.conf])
    err = p.stderr.decode()
    assert p.returncode == 0, err
    assert "account broken: not a hash libxcrypt knows" in err, err
    assert "account old: a legacy hash method (weak)" in err, err
    assert "account good:" not in err, err
