# postfix_site: a private, throwaway Postfix instance playing a site's own
# MTA on 127.0.0.1:PORT (its config_directory and queue_directory in a temp
# dir; final destination for the test domain, each user's mail in a Maildir
# below that dir). It never touches the system's Postfix instance: every
# command runs with -c DIR/etc, and only this instance's master (by the PID
# in its own pid file) is signalled.

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

MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command + args
{listen} inet n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class PostfixSite:
    """Postfix as the MTA of `domain`, users' mail in DIR/mail/<domain>/<user>/ (Maildir)."""

    def __init__(self, domain, users=("user",), port=None):
        self.domain = domain
        self.users = list(users)
        self.port = port or free_port()
        # Postfix's daemons open files here after dropping privileges: the
        # tree must be traversable by user postfix, so not under pytest's 0700 tmp.
        self.dir = tempfile.mkdtemp(prefix="relayd-pfsite-", dir="/tmp")
        os.chmod(self.dir, 0o755)
        self.etc = os.path.join(self.dir, "etc")
        self.queue = os.path.join(self.dir, "queue")
        self.mail = os.path.join(self.dir, "mail")
        self.logfile = os.path.join(self.dir, "log", "maillog")
        self.started = False

    def run(self, args, timeout=30, check=True):
        r = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError("%s failed (%d):\n%s" % (" ".join(args), r.returncode,
                                                          r.stdout.decode(errors="replace")))
        return r.stdout.decode(errors="replace")

    def setup(self):
        pf = pwd.getpwnam("postfix")
        nobody = pwd.getpwnam("nobody")
        for d in (self.etc, self.queue, os.path.join(self.dir, "data"), os.path.join(self.dir, "log"), self.mail):
            os.makedirs(d, exist_ok=True)
        os.chmod(self.etc, 0o755)
        os.chmod(os.path.join(self.dir, "log"), 0o755)
        os.chown(os.path.join(self.dir, "data"), pf.pw_uid, pf.pw_gid)
        # virtual(8) delivers as this uid: the mailbox base must be its own
        os.chown(self.mail, nobody.pw_uid, nobody.pw_gid)
        with open(os.path.join(self.etc, "vmailbox"), "w") as f:
            for u in self.users:
                f.write("%s@%s\t%s/%s/\n" % (u, self.domain, self.domain, u))
        main_cf = """\
# written by the relayd integration tests: a site's MTA, loopback only
compatibility_level = 3.6
queue_directory = {q}
data_directory = {dir}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.{dom}
mydomain = {dom}
myorigin = $myhostname
mydestination = localhost
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
biff = no
append_dot_mydomain = no
smtputf8_enable = no
smtpd_banner = $myhostname ESMTP site MTA
virtual_mailbox_domains = {dom}
virtual_mailbox_base = {mail}
virtual_mailbox_maps = texthash:{etc}/vmailbox
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
virtual_minimum_uid = 1
# nothing leaves this instance: mail for anyone else stays here
default_transport = error:this test site delivers nowhere else
relay_transport = error:this test site delivers nowhere else
maillog_file = {dir}/log/maillog
maillog_file_prefixes = {dir}/log
""".format(q=self.queue, dir=self.dir, dom=self.domain, mail=self.mail, etc=self.etc,
           uid=nobody.pw_uid, gid=nobody.pw_gid)
        with open(os.path.join(self.etc, "main.cf"), "w") as f:
            f.write(main_cf)
        with open(os.path.join(self.etc, "master.cf"), "w") as f:
            f.write(MASTER_CF.format(listen="127.0.0.1:%d" % self.port))
        # Postfix waits until a freshly written config file is a second old
        past = time.time() - 5
        for name in ("main.cf", "master.cf", "vmailbox"):
            os.utime(os.path.join(self.etc, name), (past, past))
        return self

    def master_pid(self):
        try:
            with open(os.path.join(self.queue, "pid", "master.pid")) as f:
                pid = int(f.read().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None
        try:
            with open("/proc/%d/stat" % pid) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return None
        return None if state in ("Z", "X") else pid

    def start(self, timeout=20):
        self.run(["postfix", "-c", self.etc, "start"], timeout=timeout)
        self.started = True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.settimeout(5)
                    if s.recv(512).startswith(b"220"):
                        s.sendall(b"QUIT\r\n")
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError("Postfix did not greet on 127.0.0.1:%d within %ss:\n%s" % (
            self.port, timeout, self.log_text()[-3000:]))

    def _session_pids(self, sid):
        pids = []
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % p) as f:
                    rest = f.read().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            if rest[0] not in ("Z", "X") and rest[3] == str(sid):
                pids.append(int(p))
        return pids

    def stop(self):
        """SIGTERM to this instance's master (what `postfix stop` does), then a
        bounded wait until its session (master and children) is gone."""
        pid = self.master_pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if not self._session_pids(pid):
                return
            time.sleep(0.05)
        for p in self._session_pids(pid):  # last resort: this instance's processes only
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def teardown(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_text(self):
        try:
            with open(self.logfile, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def mailbox(self, user):
        """The messages (bytes, LF line ends as Maildir stores them) delivered to user."""
        return read_maildir(os.path.join(self.mail, self.domain, user))

    def wait_mail(self, user, n, timeout):
        return wait_maildir(os.path.join(self.mail, self.domain, user), n, timeout, "%s's mailbox (Postfix)" % user, self.log_text)
