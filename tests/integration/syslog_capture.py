# syslog_capture: relayd's own syslog output, as a syslog daemon would write
# it, for the tests that run the log tools (pflogsumm, fail2ban-regex).
# relayd (glibc's syslog(3)) writes datagrams to /dev/log. A test machine may
# have none, and must not have its own replaced, so relayd runs in a private
# mount namespace whose /dev is a small tmpfs holding the few device nodes it
# needs (bound from the real /dev) and /dev/log pointing at our socket. The
# receiver writes each line in rsyslog's traditional format:
#   "Dec  2 01:22:40 testhost relayd/smtpd[123]: connect from unknown[...]"
# and keeps each datagram's facility.

import os
import re
import socket
import threading

HOST = "testhost"
DEVICES = ("null", "zero", "full", "random", "urandom")


class SyslogCapture:
    def __init__(self, workdir):
        self.dir = workdir
        os.makedirs(self.dir, exist_ok=True)
        self.sock_path = os.path.join(self.dir, "log.sock")
        self.path = os.path.join(self.dir, "mail.log")
        self.facilities = set()
        self.bad = []  # datagrams not in syslog(3)'s format
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.sock_path)
        os.chmod(self.sock_path, 0o666)  # relayd drops privileges
        self.sock.settimeout(0.2)
        open(self.path, "w").close()
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        with open(self.path, "a") as out:
            while not self._stop:
                try:
                    data = self.sock.recv(65536)
                except socket.timeout:
                    continue
                except OSError:
                    return
                m = re.match(rb"<(\d+)>(\w{3} [ \d]\d \d\d:\d\d:\d\d) (.*)$", data.rstrip(b"\n"), re.S)
                if not m:
                    self.bad.append(data)
                    continue
                self.facilities.add(int(m.group(1)) >> 3)
                out.write("%s %s %s\n" % (m.group(2).decode(), HOST, m.group(3).decode(errors="replace")))
                out.flush()

    def launcher(self):
        """The command prefix that runs relayd with this capture as /dev/log."""
        old = os.path.join(self.dir, "olddev")
        os.makedirs(old, exist_ok=True)
        binds = " ".join("touch /dev/{0}; mount --bind {1}/{0} /dev/{0};".format(d, old) for d in DEVICES)
        script = ("set -e; mount --make-rprivate /; mount --bind /dev {old}; "
                  "mount -t tmpfs -o size=64k,mode=755 relayd-test-dev /dev; {binds} "
                  "ln -s {sock} /dev/log; exec \"$@\"").format(old=old, binds=binds, sock=self.sock_path)
        return ["unshare", "-m", "--", "sh", "-c", script, "relayd-in-ns"]

    def text(self):
        with open(self.path) as f:
            return f.read()

    def close(self):
        self._stop = True
        self.thread.join(5)
        self.sock.close()


def attach(relayd, capture):
    """Make a Relayd (not started yet) log to syslog through capture."""
    relayd.launcher = capture.launcher()
    relayd.stderr_log = False
    relayd.logfile = capture.path
