# test_manual: relayd(8) as Debian's man shows it (groff) has the sections
# an operator coming from Postfix looks for - MIGRATING FROM POSTFIX,
# TROUBLESHOOTING, BACKUP, SEE ALSO naming etrnctl(8) and relayd.conf(5) -
# and its migration example is real: the relayd.conf it prints passes
# `relayd -t`, and relayd run on it takes a listed recipient, refuses an
# unlisted one as relay_recipient_maps did, advertises the size limit and
# takes ETRN from mynetworks.

import os
import re
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
PAGE = os.path.join(HERE, "..", "..", "man", "relayd.8")


def rendered():
    p = subprocess.run(["groff", "-mandoc", "-Tutf8", "-P-cbou", PAGE], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    assert p.returncode == 0 and p.stderr == b"", p.stderr
    return p.stdout.decode()


def section(text, name):
    m = re.search(r"^%s\n(.*?)(?=^[A-Z][A-Z ]+\n)" % re.escape(name), text, re.M | re.S)
    assert m, "relayd(8) has no section %s" % name
    return m.group(1)


def migration_config():
    """The relayd.conf of MIGRATING FROM POSTFIX, from the page's source."""
    src = open(PAGE).read()
    m = re.search(r"\.Sh MIGRATING FROM POSTFIX.*?\nbecomes\n\.Bd -literal -offset indent\n(.*?)\n\.Ed\n", src, re.S)
    assert m, "no relayd.conf example in MIGRATING FROM POSTFIX"
    return m.group(1)


def test_relayd_8_has_the_operator_sections():
    text = rendered()
    see = " ".join(section(text, "SEE ALSO").split())
    for ref in ("etrnctl(8)", "relayd.conf(5)", "fetchmail(1)", "postfix(1)", "postconf(5)", "pflogsumm(1)",
                "fail2ban-client(1)"):
        assert ref in see, "SEE ALSO lacks %s: %s" % (ref, see)
    mig = " ".join(section(text, "MIGRATING FROM POSTFIX").split())
    for word in ("relay_domains", "transport_maps", "fast_flush_domains", "smtpd_etrn_restrictions",
                 "relay_recipient_maps", "message_size_limit", "queue_minfree", "postqueue -f", "postsuper",
                 "MX 20", "MX 10"):
        assert word in mig, "MIGRATING FROM POSTFIX does not mention %s" % word
    trouble = " ".join(section(text, "TROUBLESHOOTING").split())
    for word in ("etrnctl queue", "etrnctl domains", "relayd -t", "4.4.6", "452 4.2.2", "452 4.3.1",
                 "TLS required", "75"):
        assert word in trouble, "TROUBLESHOOTING does not mention %s" % word
    assert "Restoring" in section(text, "BACKUP")


def test_the_migration_example_works(relayd_factory, relayd_path, tmp_path):
    conf = migration_config()
    rcpts = tmp_path / "example.org.recipients"
    rcpts.write_text("u@example.org\npostmaster@example.org\n")
    assert "/etc/relayd/example.org.recipients" in conf
    conf = conf.replace("/etc/relayd/example.org.recipients", str(rcpts))
    r = relayd_factory(domains={}, extra=conf)
    p = subprocess.run([relayd_path, "-t", "-f", r.conf], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=30)
    assert p.returncode == 0, p.stderr
    s = r.smtp()
    code, text = s.ehlo()
    assert code == 250 and b"SIZE 20480000" in text, text
    assert s.mail("s@sender.test")[0] == 250
    assert s.rcpt("u@example.org")[0] == 250
    code, text = s.rcpt("nobody@example.org")
    assert code == 550 and text.startswith(b"5.1.1"), (code, text)
    code, _ = s.data(b"Subject: migrated\r\n\r\nhello\r\n")
    assert code == 250
    # etrn_access = mynetworks: the test runs from 127.0.0.1
    code, text = s.docmd("ETRN", "example.org")
    assert code in (250, 253), (code, text)
    s.quit()
