# exim_site: a private, throwaway Exim 4 (Debian's exim4-daemon-light) playing
# a site's own MTA on 127.0.0.1:PORT, without installing Exim or removing
# Postfix. The packages are fetched once with `apt-get download` and unpacked
# with `dpkg -x` into a cache below the build dir; each instance has its own
# config (-C), spool, log and Maildirs in a temp dir. Debian's binary looks up
# its compiled-in user "Debian-exim" at start and refuses to run without it:
# the daemon runs in a mount namespace of its own (unshare -m) where a copy of
# /etc/passwd and /etc/group with that user is bind-mounted, so the system's
# account files are never changed. Only this instance's daemon (the PID of
# the process this fixture started) is signalled.

import fcntl
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from relayd_fixture import free_port
from maildir import read_maildir, wait_maildir

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGES = ("exim4-base", "exim4-config", "exim4-daemon-light")

CONFIG = """\
# written by the relayd integration tests: a site's MTA, loopback only
exim_path = {exim}
exim_user = Debian-exim
exim_group = Debian-exim
primary_hostname = mx.{dom}
qualify_domain = {dom}
domainlist local_domains = {dom}
spool_directory = {dir}/spool
log_file_path = {dir}/log/%slog
local_interfaces = <; 127.0.0.1
acl_smtp_rcpt = acl_check_rcpt
host_lookup =
rfc1413_hosts =
smtp_banner = mx.{dom} ESMTP site MTA
keep_environment =
tls_advertise_hosts =
# nothing leaves this instance; a delivery failure is frozen, not bounced
ignore_bounce_errors_after = 0s

begin acl
acl_check_rcpt:
  accept domains = +local_domains
  deny message = this test site delivers nowhere else

begin routers
site_user:
  driver = accept
  domains = +local_domains
  local_parts = {users}
  transport = maildir_delivery

begin transports
# no Return-Path:, Envelope-to: or Delivery-date: (RFC 5321 §4.4 leaves
# Return-Path to the final delivery, and a test compares the message below
# Exim's own Received: line)
maildir_delivery:
  driver = appendfile
  directory = {mail}/${{local_part_data}}
  maildir_format
  create_directory
  delivery_date_add = false
  envelope_to_add = false
  return_path_add = false
  user = Debian-exim
  group = Debian-exim
  mode = 0600

begin retry
*  *  F,1h,1m
"""


def _reachable_by_all(path):
    """Can every user enter every directory down to path? Exim re-executes
    itself as its own user to deliver, so its binary must be reachable."""
    path = os.path.abspath(path)
    while True:
        if os.path.isdir(path) and not os.stat(path).st_mode & 0o001:
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


def cache_dir():
    """Where the unpacked packages live: below the build dir the tests run
    from, or, when that sits in a directory others may not enter (a clone in
    a 0700 mktemp directory), a fixed cache in /var/tmp."""
    base = os.path.abspath(os.environ.get("top_builddir") or os.path.join(HERE, "..", ".."))
    if _reachable_by_all(base):
        return os.path.join(base, "tests", "exim-cache")
    return "/var/tmp/relayd-tests-exim-cache"


def _run(args, cwd=None, timeout=300):
    r = subprocess.run(args, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=timeout)
    if r.returncode != 0:
        raise AssertionError("%s failed (%d):\n%s" % (" ".join(args), r.returncode,
                                                      r.stdout.decode(errors="replace")))
    return r.stdout.decode(errors="replace")


def exim_binary():
    """Debian's exim4 binary, downloaded and unpacked once (under a lock, as
    several test processes may ask at the same time)."""
    cache = cache_dir()
    os.makedirs(cache, exist_ok=True)
    root = os.path.join(cache, "root")
    exim = os.path.join(root, "usr", "sbin", "exim4")
    with open(os.path.join(cache, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(exim):
            debs = os.path.join(cache, "debs")
            shutil.rmtree(debs, ignore_errors=True)  # what an interrupted run left
            os.makedirs(debs)
            # apt's sandbox user cannot write here; apt then downloads as root (a warning only)
            try:
                _run(["apt-get", "download", "-q"] + list(PACKAGES), cwd=debs)
            except AssertionError:
                # package lists older than the archive name versions it no longer has
                _run(["apt-get", "update", "-qq"])
                _run(["apt-get", "download", "-q"] + list(PACKAGES), cwd=debs)
            tmp = root + ".new"
            shutil.rmtree(tmp, ignore_errors=True)
            for name in sorted(os.listdir(debs)):
                if name.endswith(".deb"):
                    _run(["dpkg", "-x", os.path.join(debs, name), tmp])
            os.rename(tmp, root)
    return exim


def _free_id(used):
    for n in range(64990, 64000, -1):
        if n not in used:
            return n
    raise AssertionError("no free uid/gid for Debian-exim")


class EximSite:
    """Exim as the MTA of `domain`, users' mail in DIR/mail/<user>/ (Maildir)."""

    def __init__(self, domain, users=("user",), port=None):
        self.domain = domain
        self.users = list(users)
        self.port = port or free_port()
        # Exim's delivery processes run as the Exim user: the tree must be
        # traversable by it, so not under pytest's 0700 tmp.
        self.dir = tempfile.mkdtemp(prefix="relayd-eximsite-", dir="/tmp")
        os.chmod(self.dir, 0o755)
        self.mail = os.path.join(self.dir, "mail")
        self.conf = os.path.join(self.dir, "exim.conf")
        self.proc = None
        self.stderr = None

    def setup(self):
        self.exim = exim_binary()
        with open("/etc/passwd") as f:
            passwd = f.read()
        with open("/etc/group") as f:
            group = f.read()
        uid = _free_id({p.pw_uid for p in pwd.getpwall()})
        used_gids = {int(l.split(":")[2]) for l in group.splitlines() if l.count(":") >= 3}
        gid = uid if uid not in used_gids else _free_id(used_gids)
        # the private account files the daemon sees (and only it)
        with open(os.path.join(self.dir, "passwd"), "w") as f:
            f.write(passwd.rstrip("\n") + "\nDebian-exim:x:%d:%d:Exim test site:/nonexistent:"
                    "/usr/sbin/nologin\n" % (uid, gid))
        with open(os.path.join(self.dir, "group"), "w") as f:
            f.write(group.rstrip("\n") + "\nDebian-exim:x:%d:\n" % gid)
        for d in ("spool", "log", "mail"):
            os.makedirs(os.path.join(self.dir, d), exist_ok=True)
            os.chown(os.path.join(self.dir, d), uid, gid)
        with open(self.conf, "w") as f:
            f.write(CONFIG.format(exim=self.exim, dom=self.domain, dir=self.dir, mail=self.mail,
                                  users=" : ".join(self.users)))
        return self

    def start(self, timeout=20):
        # -bdf: the daemon stays in the foreground, so the PID is ours;
        # -oX: its port; -odi: each message is delivered as soon as received
        script = ('mount --bind "$1/passwd" /etc/passwd && mount --bind "$1/group" /etc/group && '
                  'exec "$2" -C "$1/exim.conf" -bdf -oX "$3" -odi -oP "$1/exim.pid"')
        self.stderr = open(os.path.join(self.dir, "stderr"), "wb")
        self.proc = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", self.dir,
             self.exim, str(self.port)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.stderr,
            start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.settimeout(5)
                    if s.recv(512).startswith(b"220"):
                        s.sendall(b"QUIT\r\n")
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError("Exim did not greet on 127.0.0.1:%d within %ss:\n%s%s" % (
            self.port, timeout, self._read("stderr"), self.log_text()[-3000:]))

    def version(self):
        script = ('mount --bind "$1/passwd" /etc/passwd && mount --bind "$1/group" /etc/group && '
                  'exec "$2" -C "$1/exim.conf" -bV')
        return _run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh",
                     self.dir, self.exim], timeout=30)

    def stop(self):
        """SIGTERM to this instance's daemon, then a bounded wait; its
        delivery processes are in its session and end with their message."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def teardown(self):
        self.stop()
        if self.stderr is not None:
            self.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _read(self, name):
        try:
            with open(os.path.join(self.dir, name), "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_text(self):
        return self._read("log/mainlog")

    def mailbox(self, user):
        """The messages (bytes, LF line ends as Maildir stores them) delivered to user."""
        return read_maildir(os.path.join(self.mail, user))

    def wait_mail(self, user, n, timeout):
        return wait_maildir(os.path.join(self.mail, user), n, timeout, "%s's mailbox (Exim)" % user, self.log_text)
