# test_reload_sessions: relayd(8) SIGHUP, what a reload changes and what it
# must not. Sessions already open keep the configuration they started with
# (a domain the reload removed is still theirs, and so is their SIZE), new
# sessions get the new one; and a new TLS certificate, under a new name or
# renewed in place under the old one, is what new STARTTLS handshakes present.

import shutil
import ssl
import subprocess

from relayd_fixture import make_message, queue_id_of


def rcpt_reply(c, addr):
    c.expect("MAIL FROM:<a@b.test>", 250)
    rep = c.cmd("RCPT TO:<%s>" % addr)
    c.expect("RSET", 250)
    return rep.line


def test_open_session_keeps_a_domain_the_reload_removed(relayd_factory):
    r = relayd_factory(domains={"example.org": {"mode": "hold"}, "gone.test": {"mode": "hold"}},
                       max_message_size="1m")
    old = r.raw()
    assert "SIZE 1048576" in old.ehlo().texts
    del r.domains["gone.test"]
    r.keys["max_message_size"] = "64k"
    r.write_config()
    off = r.reload()
    r.wait_log(r"configuration reloaded from .* \(1 domains\)", since=off)
    # a new session: the domain is gone, the size is the new one
    new = r.raw()
    assert "SIZE 65536" in new.ehlo().texts
    assert rcpt_reply(new, "u@gone.test") == "550 5.7.1 <u@gone.test>: Relay access denied (not a relay domain)"
    # the session that was open keeps what it started with, to the queue
    assert "SIZE 1048576" in old.ehlo().texts
    assert rcpt_reply(old, "u@gone.test") == "250 2.1.5 Ok"
    qid = queue_id_of(old.send_message("a@b.test", ["u@gone.test"], make_message(subject="kept")))
    assert [x["address"] for x in r.queue.message(qid)["recipients"]] == ["u@gone.test"]


def make_cert(path_cert, path_key, cn):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", path_key, "-out", path_cert, "-days", "2", "-subj", "/CN=" + cn,
                    "-addext", "subjectAltName=DNS:relay.test"],
                   check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    with open(path_cert) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def presented(r):
    """The certificate a new session's STARTTLS handshake presents (DER)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    c = r.raw()
    c.ehlo()
    c.expect("STARTTLS", 220)
    c.start_tls(ctx)
    der = c.sock.getpeercert(binary_form=True)
    c.ehlo()
    c.cmd("QUIT")
    c.close()
    return der


def test_reload_presents_a_new_certificate(relayd_factory, tmp_path):
    d = tmp_path / "tls"
    d.mkdir()
    first = make_cert(str(d / "a.pem"), str(d / "a.key"), "first")
    second = make_cert(str(d / "b.pem"), str(d / "b.key"), "second")
    renewed = make_cert(str(d / "c.pem"), str(d / "c.key"), "renewed")
    r = relayd_factory(tls_cert=str(d / "a.pem"), tls_key=str(d / "a.key"))
    assert presented(r) == first
    # a new file name
    r.keys["tls_cert"], r.keys["tls_key"] = str(d / "b.pem"), str(d / "b.key")
    r.write_config()
    off = r.reload()
    r.wait_log(r"configuration reloaded from ", since=off)
    assert presented(r) == second
    # renewed in place (certbot, acme.sh): same names, new contents
    shutil.copy(str(d / "c.pem"), str(d / "b.pem"))
    shutil.copy(str(d / "c.key"), str(d / "b.key"))
    off = r.reload()
    r.wait_log(r"configuration reloaded from ", since=off)
    assert presented(r) == renewed
