# test_hooks: contrib/etrnctl-linkup run the way each network system runs it
# (ifupdown's IFACE/MODE/PHASE, ppp's arguments, NetworkManager's $1 $2,
# networkd-dispatcher's IFACE/STATE), against a fake etrnctl that records its
# arguments. It must call etrnctl with the configured relays and domains for a
# real interface coming up, never for lo or for any other event, and always
# exit 0 at once: when etrnctl fails, hangs past the timeout, or another run
# holds the lock. The last test runs the real etrnctl against a dead port.

import os
import shutil
import signal
import subprocess
import time

import pytest

from relayd_fixture import free_port, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
TOP_SRCDIR = os.environ.get("top_srcdir") or os.path.join(HERE, "..", "..")
HOOK = os.path.abspath(os.path.join(TOP_SRCDIR, "contrib", "etrnctl-linkup"))

# The hook is POSIX sh: run it under every shell there is of these (dash is
# Debian's /bin/sh).
SHELLS = [s for s in ("/bin/dash", "/bin/bash") if os.access(s, os.X_OK)] or ["/bin/sh"]

DEFAULTS = """\
# written by test_hooks
ETRN_RELAYS="relay1.example.net, [2001:db8::25]:2525"
export ETRN_DOMAINS='example.org @example.com'
ETRN_RETRY=2
ETRN_TIMEOUT=30
"""
EXPECTED_ARGS = ["etrn", "-H", "relay1.example.net", "-H", "[2001:db8::25]:2525",
                 "--retry", "2", "example.org", "@example.com"]

# etrnctl stand-in: one BEGIN..END record per run (pid, arguments, the
# defaults path it would read), then optional sleep (exec, so the recorded
# pid is the sleeper's) and exit status from the environment.
FAKE_ETRNCTL = """\
#!/bin/sh
{{
  echo "BEGIN $$"
  for a in "$@"; do printf 'ARG %s\\n' "$a"; done
  printf 'ENV_DEFAULTS %s\\n' "${{ETRNCTL_DEFAULTS:-}}"
  echo "END $$"
}} >> {calls}
echo "fake etrnctl: asked $#"
echo "fake etrnctl: a warning" >&2
if [ -n "${{FAKE_SLEEP:-}}" ]; then
  ( /bin/sleep "$FAKE_SLEEP"; echo "DONE $$" >> {calls} ) &
  echo "SLEEPER $!" >> {calls}
  wait
fi
exit "${{FAKE_EXIT:-0}}"
"""

# logger(1) stand-in: "priority|tag|line" for every line on stdin.
FAKE_LOGGER = """\
#!/bin/sh
pri=user.notice tag=
while [ $# -gt 0 ]; do
  case $1 in
  -t) tag=$2; shift 2 ;;
  -p) pri=$2; shift 2 ;;
  *) shift ;;
  esac
done
while IFS= read -r l || [ -n "$l" ]; do printf '%s|%s|%s\\n' "$pri" "$tag" "$l" >> {log}; done
"""

# Where each system installs the hook, and how it calls it for "IFACE came up".
INSTALL_PATHS = {
    "ifupdown": "etc/network/if-up.d/etrnctl",
    "ppp": "etc/ppp/ip-up.d/etrnctl",
    "networkmanager": "etc/NetworkManager/dispatcher.d/50-etrnctl",
    "networkd-dispatcher": "etc/networkd-dispatcher/routable.d/50-etrnctl",
}


def caller(system, iface, action="up"):
    """(argv after the script, environment) as `system` passes them."""
    if system == "ifupdown":
        return [], {"IFACE": iface, "LOGICAL": iface, "ADDRFAM": "inet", "METHOD": "dhcp",
                    "MODE": "start" if action == "up" else "stop",
                    "PHASE": "post-up" if action == "up" else "pre-down", "VERBOSITY": "0"}
    if system == "ppp":
        return ([iface, "/dev/ttyUSB0", "115200", "10.0.0.2", "10.0.0.1", ""],
                {"PPP_IFACE": iface, "PPP_TTY": "/dev/ttyUSB0", "PPP_SPEED": "115200",
                 "PPP_LOCAL": "10.0.0.2", "PPP_REMOTE": "10.0.0.1", "PPP_IPPARAM": ""})
    if system == "networkmanager":
        return [iface, action], {"CONNECTION_UUID": "5f1e0c3a-0000-4000-8000-000000000001",
                                 "CONNECTION_ID": "Wired connection 1", "DEVICE_IFACE": iface,
                                 "DEVICE_IP_IFACE": iface, "NM_DISPATCHER_ACTION": action}
    if system == "networkd-dispatcher":
        state = "routable" if action == "up" else action
        return [], {"IFACE": iface, "STATE": state, "OperationalState": state,
                    "AdministrativeState": "configured", "ADDR": "192.0.2.7",
                    "IP_ADDRS": "192.0.2.7", "IP6_ADDRS": "", "ESSID": "", "json": "{}"}
    raise ValueError(system)


class Site:
    """A scratch /etc with the hook installed under every system's name, a
    defaults file, a fake etrnctl and a fake logger on PATH."""

    def __init__(self, root):
        self.root = str(root)
        self.bin = os.path.join(self.root, "bin")
        self.calls_path = os.path.join(self.root, "calls")
        self.log_path = os.path.join(self.root, "syslog")
        self.defaults = os.path.join(self.root, "etc", "default", "etrnctl")
        self.lockdir = os.path.join(self.root, "lock")
        os.makedirs(self.bin)
        os.makedirs(os.path.dirname(self.defaults))
        self.fake = self._script("etrnctl", FAKE_ETRNCTL.format(calls=self.calls_path))
        self._script("logger", FAKE_LOGGER.format(log=self.log_path))
        for rel in list(INSTALL_PATHS.values()) + ["etc/networkd-dispatcher/off.d/50-etrnctl"]:
            link = os.path.join(self.root, rel)
            os.makedirs(os.path.dirname(link), exist_ok=True)
            os.symlink(HOOK, link)
        self.write_defaults(DEFAULTS)

    def _script(self, name, text):
        path = os.path.join(self.bin, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o755)
        return path

    def write_defaults(self, text):
        with open(self.defaults, "w") as f:
            f.write(text)

    def env(self, **extra):
        env = {"PATH": self.bin + ":/usr/sbin:/usr/bin:/sbin:/bin", "ETRNCTL": self.fake,
               "ETRNCTL_DEFAULTS": self.defaults, "ETRN_LOCKDIR": self.lockdir,
               "ETRNCTL_LINKUP_FOREGROUND": "1", "LC_ALL": "C"}
        env.update(extra)
        return {k: v for k, v in env.items() if v is not None}

    def run(self, script, args=(), env=None, shell=SHELLS[0], timeout=60):
        """Run the hook as `script` (a path, so $0 is what the system uses)."""
        start = time.monotonic()
        p = subprocess.run([shell, script] + list(args), env=env or self.env(),
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=timeout)
        p.elapsed = time.monotonic() - start
        return p

    def run_as(self, system, iface, action="up", shell=SHELLS[0], **extra):
        args, env = caller(system, iface, action)
        env.update(extra)
        return self.run(os.path.join(self.root, INSTALL_PATHS[system]), args,
                        self.env(**env), shell)

    def calls(self):
        """[{pid, args, defaults, done, sleeper}] for every fake etrnctl run."""
        out, cur, by_pid = [], None, {}
        if not os.path.exists(self.calls_path):
            return out
        with open(self.calls_path) as f:
            for line in f.read().splitlines():
                word, _, rest = line.partition(" ")
                if word == "BEGIN":
                    cur = {"pid": int(rest), "args": [], "done": False, "sleeper": None}
                    out.append(cur)
                    by_pid[cur["pid"]] = cur
                elif word == "ARG":
                    cur["args"].append(rest)
                elif word == "ENV_DEFAULTS":
                    cur["defaults"] = rest
                elif word == "SLEEPER":
                    cur["sleeper"] = int(rest)
                elif word == "DONE":
                    by_pid[int(rest)]["done"] = True
        return out

    def log(self):
        """[(priority, tag, message)] the hook sent to logger."""
        if not os.path.exists(self.log_path):
            return []
        with open(self.log_path) as f:
            return [tuple(l.split("|", 2)) for l in f.read().splitlines()]

    def messages(self):
        return [m for _, _, m in self.log()]

    def lock_free(self):
        """True when nobody holds the hook's lock (flock -n succeeds)."""
        lock = os.path.join(self.lockdir, "etrnctl-linkup.lock")
        if not os.path.exists(lock):
            return True
        return subprocess.run(["flock", "-n", lock, "true"]).returncode == 0


@pytest.fixture
def site(tmp_path):
    s = Site(tmp_path)
    yield s
    # A background run must not outlive its test.
    wait_until(s.lock_free, 30, what="the hook's background job to end")


def release(call):
    """End a fake etrnctl's FAKE_SLEEP now (the sleeper a test's hook run
    started, by its pid): the run then finishes as if the sleep were over."""
    pid = call["sleeper"]  # the ( sleep; echo DONE ) subshell: end its sleep
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            kids = [int(k) for k in f.read().split()]
    except FileNotFoundError:
        kids = []
    for k in kids or [pid]:
        os.kill(k, signal.SIGTERM)


def alive(pid):
    """True while pid runs (a zombie nobody has reaped yet counts as gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


# ---- each system, a real interface -----------------------------------------------------

@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("system", sorted(INSTALL_PATHS))
def test_link_up_calls_etrnctl(site, system, shell):
    iface = "ppp0" if system == "ppp" else "eth0"
    p = site.run_as(system, iface, shell=shell)
    assert p.returncode == 0, p
    calls = site.calls()
    assert len(calls) == 1, calls
    assert calls[0]["args"] == EXPECTED_ARGS
    # etrnctl reads the same defaults file the hook did
    assert calls[0]["defaults"] == site.defaults
    log = site.log()
    assert all(tag == "etrnctl-linkup" for _, tag, _ in log), log
    msgs = [m for _, _, m in log]
    assert any(m.startswith("%s: %s up: " % (system, iface)) for m in msgs), msgs
    # etrnctl's own output, stdout and stderr, is logged line by line
    assert "fake etrnctl: asked %d" % len(EXPECTED_ARGS) in msgs, msgs
    assert "fake etrnctl: a warning" in msgs, msgs
    assert ("mail.info", "etrnctl-linkup",
            "etrnctl exit 0: done (flush started or nothing waiting)") in log, log
    assert p.stdout == b"" and p.stderr == b"", p


@pytest.mark.parametrize("system", sorted(INSTALL_PATHS))
def test_lo_is_skipped(site, system):
    p = site.run_as(system, "lo")
    assert p.returncode == 0, p
    assert site.calls() == []
    assert p.stderr == b""


def test_skip_ifaces_patterns(site):
    site.write_defaults(DEFAULTS + 'ETRN_SKIP_IFACES="docker* eth1,wg*"\n')
    for iface in ("docker0", "eth1", "wg0", "lo"):
        p = site.run_as("networkmanager", iface)
        assert p.returncode == 0, p
    assert site.calls() == []
    p = site.run_as("networkmanager", "eth10")  # eth1 is not a prefix pattern
    assert p.returncode == 0, p
    assert len(site.calls()) == 1


# ---- events that are not "the link came up" -----------------------------------------

@pytest.mark.parametrize("system,action", [
    ("networkmanager", "down"),
    ("networkmanager", "pre-up"),
    ("networkmanager", "dhcp4-change"),
    ("networkmanager", "connectivity-change"),
    ("ifupdown", "down"),
])
def test_other_events_do_nothing(site, system, action):
    p = site.run_as(system, "eth0", action)
    assert p.returncode == 0, p
    assert site.calls() == []


def test_networkd_dispatcher_other_state_does_nothing(site):
    args, env = caller("networkd-dispatcher", "eth0", "off")
    p = site.run(os.path.join(site.root, "etc/networkd-dispatcher/off.d/50-etrnctl"), args,
                 site.env(**env))
    assert p.returncode == 0, p
    assert site.calls() == []


def test_ifup_all_pass_does_nothing(site):
    # `ifup -a` runs if-up.d once more with IFACE=--all
    p = site.run_as("ifupdown", "--all")
    assert p.returncode == 0, p
    assert site.calls() == []


# ---- called under another name: the environment says who called --------------------

@pytest.mark.parametrize("system", sorted(INSTALL_PATHS))
def test_caller_known_from_environment(site, system):
    iface = "ppp0" if system == "ppp" else "eth0"
    args, env = caller(system, iface)
    p = site.run(HOOK, args, site.env(**env))  # $0 names no system
    assert p.returncode == 0, p
    assert [c["args"] for c in site.calls()] == [EXPECTED_ARGS]
    assert any(m.startswith("%s: %s up: " % (system, iface)) for m in site.messages())
    # ...and the same environment with a "down" event does nothing
    if system == "networkmanager":
        args, env = caller(system, iface, "down")
        p = site.run(HOOK, args, site.env(**env))
        assert p.returncode == 0, p
        assert len(site.calls()) == 1


def test_by_hand_with_interface_argument(site):
    p = site.run(HOOK, ["eth0"])
    assert p.returncode == 0, p
    assert [c["args"] for c in site.calls()] == [EXPECTED_ARGS]
    p = site.run(HOOK, ["lo"])
    assert p.returncode == 0, p
    assert len(site.calls()) == 1


# ---- the defaults file ---------------------------------------------------------------

def test_defaults_options_and_quoting(site, tmp_path):
    marker = tmp_path / "pwned"
    site.write_defaults(
        "  # comments, blank lines, export, both quotes\n"
        "\n"
        "ETRN_RELAYS=relay.example.net:2525\n"
        "export ETRN_DOMAINS=\"example.org,example.net\"\n"
        "ETRN_WAIT_LOCAL='127.0.0.1:25'\n"
        "ETRN_RETRY=7\n"
        # never run as shell code: these stay words
        "ETRN_OPTIONS=\"--starttls=verify $(touch %s) -q\"\n"
        "ETRN_SKIP_IFACES=`touch %s`\n"
        "NOT_OURS=whatever\n" % (marker, marker))
    p = site.run_as("ifupdown", "eth0")
    assert p.returncode == 0, p
    assert not marker.exists(), "the defaults file was executed"
    assert [c["args"] for c in site.calls()] == [[
        "etrn", "-H", "relay.example.net:2525", "--wait-local", "127.0.0.1:25",
        "--retry", "7", "--starttls=verify", "$(touch", "%s)" % marker, "-q",
        "example.org", "example.net"]]


def test_account_is_passed_without_the_password(site, tmp_path):
    """ETRN_USER and ETRN_PASSWORD_FILE become --user and --password-file
    (issue 8): the password itself never reaches a command line."""
    site.write_defaults('ETRN_RELAYS="relay.example.net"\nETRN_DOMAINS="example.org"\n'
                        'ETRN_USER=site1\nETRN_PASSWORD_FILE="/etc/etrnctl/site1.pw"\n')
    p = site.run_as("ifupdown", "eth0")
    assert p.returncode == 0, p
    assert [c["args"] for c in site.calls()] == [[
        "etrn", "-H", "relay.example.net", "--retry", "5", "--user", "site1",
        "--password-file", "/etc/etrnctl/site1.pw", "example.org"]]


def test_no_domains_does_nothing(site):
    site.write_defaults('ETRN_RELAYS="relay.example.net"\nETRN_DOMAINS=""\n')
    p = site.run_as("ppp", "ppp0")
    assert p.returncode == 0, p
    assert site.calls() == []
    assert any("ETRN_DOMAINS is empty" in m for m in site.messages()), site.log()


def test_atrn_mode(site):
    # ETRN_MODE=atrn: etrnctl atrn, no --wait-local (atrn checks the local
    # MTA itself), and no domain means every domain of the account
    site.write_defaults('ETRN_MODE=atrn\nETRN_RELAYS="relay.example.net:366"\n'
                        'ETRN_WAIT_LOCAL=127.0.0.1:25\nETRN_RETRY=3\n'
                        'ETRN_OPTIONS="--starttls=verify"\nETRN_USER=acme\n'
                        'ETRN_PASSWORD_FILE=/etc/etrnctl/acme.password\n')
    p = site.run_as("ppp", "ppp0")
    assert p.returncode == 0, p
    assert [c["args"] for c in site.calls()] == [
        ["atrn", "-H", "relay.example.net:366", "--retry", "3", "--user", "acme",
         "--password-file", "/etc/etrnctl/acme.password", "--starttls=verify"]]
    site.write_defaults('ETRN_MODE=atrn\nETRN_DOMAINS="example.org b.example"\n')
    p = site.run_as("ppp", "ppp0")
    assert site.calls()[-1]["args"] == ["atrn", "--retry", "5", "example.org", "b.example"]
    site.write_defaults('ETRN_MODE=push\nETRN_DOMAINS="example.org"\n')
    p = site.run_as("ppp", "ppp0")
    assert p.returncode == 0, p
    assert len(site.calls()) == 2
    assert any("ETRN_MODE=push" in m and "expected etrn or atrn" in m for m in site.messages())


def test_missing_defaults_file_does_nothing(site):
    args, env = caller("ppp", "ppp0")
    p = site.run(os.path.join(site.root, INSTALL_PATHS["ppp"]), args,
                 site.env(ETRNCTL_DEFAULTS=os.path.join(site.root, "nonexistent"), **env))
    assert p.returncode == 0, p
    assert site.calls() == []


# ---- etrnctl fails, hangs, is missing: the hook still exits 0 -------------------------

@pytest.mark.parametrize("status,priority,meaning", [
    (75, "mail.warning", "temporary failure"),
    (77, "mail.err", "refused by a relay"),
    (69, "mail.err", "does not offer ETRN"),
])
def test_etrnctl_failure_still_exits_0(site, status, priority, meaning):
    p = site.run_as("ppp", "ppp0", FAKE_EXIT=str(status))
    assert p.returncode == 0, p
    assert len(site.calls()) == 1
    hits = [(pri, m) for pri, _, m in site.log() if m.startswith("etrnctl exit %d: " % status)]
    assert len(hits) == 1 and hits[0][0] == priority and meaning in hits[0][1], site.log()


def test_missing_etrnctl_still_exits_0(site):
    args, env = caller("networkmanager", "eth0")
    p = site.run(os.path.join(site.root, INSTALL_PATHS["networkmanager"]), args,
                 site.env(ETRNCTL=os.path.join(site.root, "no-such-etrnctl"), **env))
    assert p.returncode == 0, p
    assert any(m.startswith("etrnctl exit 127: ") for m in site.messages()), site.log()


@pytest.mark.time_limit(60)
def test_hanging_etrnctl_is_stopped_by_the_timeout(site):
    site.write_defaults(DEFAULTS.replace("ETRN_TIMEOUT=30", "ETRN_TIMEOUT=1"))
    # foreground mode waits for etrnctl, but only ETRN_TIMEOUT: the hook
    # returning at all (site.run is bounded) shows a 600 s etrnctl was stopped
    p = site.run_as("ifupdown", "eth0", FAKE_SLEEP="600")
    assert p.returncode == 0, p
    [call] = site.calls()
    assert not call["done"]
    assert call["sleeper"] is not None and not alive(call["sleeper"]), \
        "the timeout left etrnctl's child running"
    assert any(m == "etrnctl exit 124: timed out after 1s" for m in site.messages()), site.log()


# ---- background: the caller never waits --------------------------------------------

@pytest.mark.time_limit(60)
def test_background_returns_at_once(site):
    p = site.run_as("networkd-dispatcher", "eth0", ETRNCTL_LINKUP_FOREGROUND=None, FAKE_SLEEP="600")
    assert p.returncode == 0, p
    # subprocess.run returned, so the job holds none of our pipes either; and
    # it returned while etrnctl still runs (600 s): the caller did not wait
    assert p.stdout == b"" and p.stderr == b""
    call = wait_until(lambda: [c for c in site.calls() if c["sleeper"]], 20, what="the fake etrnctl")[0]
    assert not call["done"] and alive(call["sleeper"])
    release(call)
    wait_until(lambda: any(c["done"] for c in site.calls()), 20, what="the fake etrnctl to finish")
    wait_until(lambda: any(m.startswith("etrnctl exit 0: ") for m in site.messages()), 10,
               what="the outcome in the log")
    assert [c["args"] for c in site.calls()] == [EXPECTED_ARGS]


@pytest.mark.time_limit(60)
def test_background_hang_is_stopped_by_the_timeout(site):
    site.write_defaults(DEFAULTS.replace("ETRN_TIMEOUT=30", "ETRN_TIMEOUT=5"))
    p = site.run_as("ppp", "ppp0", ETRNCTL_LINKUP_FOREGROUND=None, FAKE_SLEEP="600")
    assert p.returncode == 0, p
    # back before the job's own 5 s timeout ended it: the caller did not wait
    assert not any(m.startswith("etrnctl exit") for m in site.messages()), site.log()
    wait_until(lambda: any(m.startswith("etrnctl exit 124: ") for m in site.messages()), 60,
               what="the timeout to stop etrnctl")
    [call] = site.calls()
    assert not call["done"] and not alive(call["sleeper"])


# ---- the lock ------------------------------------------------------------------------

@pytest.mark.time_limit(60)
@pytest.mark.parametrize("shell", SHELLS)
def test_lock_allows_one_run_at_a_time(site, shell):
    first = site.run_as("ifupdown", "eth0", shell=shell, ETRNCTL_LINKUP_FOREGROUND=None,
                        FAKE_SLEEP="600")
    assert first.returncode == 0, first
    call = wait_until(lambda: [c for c in site.calls() if c["sleeper"]], 10,
                      what="the first run to start etrnctl")[0]
    # the same link seen again (ifupdown runs once per address family), and
    # another system on top: both exit 0 (while the first still runs: it
    # waits for the test), quietly, without etrnctl
    for system, iface in (("ifupdown", "eth0"), ("networkmanager", "wlan0")):
        p = site.run_as(system, iface, shell=shell)
        assert p.returncode == 0, p
        assert p.stderr == b"", p
    assert len(site.calls()) == 1
    assert not site.calls()[0]["done"] and not site.lock_free()
    release(call)
    wait_until(site.lock_free, 20, what="the first run to release the lock")
    assert site.calls()[0]["done"]
    # once it has ended, the next link-up runs again
    p = site.run_as("networkmanager", "wlan0")
    assert p.returncode == 0, p
    assert len(site.calls()) == 2


# ---- without logger(1): stderr --------------------------------------------------------

def test_without_logger_reports_on_stderr(site, tmp_path):
    # PATH holds only what the hook needs besides the shell; no logger
    tools = tmp_path / "tools"
    tools.mkdir()
    for t in ("flock", "timeout", "mkdir"):
        os.symlink(shutil.which(t), str(tools / t))
    fake = tmp_path / "etrnctl-noexec-path"
    fake.write_text(FAKE_ETRNCTL.format(calls=site.calls_path))
    fake.chmod(0o755)
    args, env = caller("ppp", "ppp0")
    p = site.run(os.path.join(site.root, INSTALL_PATHS["ppp"]), args,
                 site.env(PATH=str(tools), ETRNCTL=str(fake), FAKE_EXIT="75", **env))
    assert p.returncode == 0, p
    assert len(site.calls()) == 1
    err = p.stderr.decode()
    assert "etrnctl-linkup: ppp: ppp0 up: " in err, err
    assert "etrnctl-linkup: etrnctl: fake etrnctl: a warning" in err, err
    assert "etrnctl-linkup: etrnctl exit 75: temporary failure" in err, err
    assert site.log() == []


# ---- the real etrnctl, relay down --------------------------------------------------

def etrnctl_binary():
    path = os.environ.get("ETRNCTL")
    if not path:
        builddir = os.environ.get("top_builddir") or os.path.join(HERE, "..", "..")
        path = os.path.join(builddir, "etrnctl", "etrnctl")
    return os.path.abspath(path)


@pytest.mark.time_limit(120)
def test_real_etrnctl_relay_down(site, tmp_path):
    etrnctl = etrnctl_binary()
    assert os.access(etrnctl, os.X_OK), "etrnctl binary not found at %s (set ETRNCTL)" % etrnctl
    port = free_port()
    locks = tmp_path / "etrnctl-locks"
    locks.mkdir()
    site.write_defaults('ETRN_RELAYS="127.0.0.1:%d"\nETRN_DOMAINS="example.org"\n'
                        'ETRN_RETRY=1\nETRN_TIMEOUT=60\n'
                        'ETRN_OPTIONS="--retry-delay 1 --lock-dir %s"\n' % (port, locks))
    # What etrnctl itself says for this relay...
    direct = subprocess.run([etrnctl, "etrn", "-H", "127.0.0.1:%d" % port, "--retry", "1",
                             "--retry-delay", "1", "--lock-dir", str(locks), "example.org"],
                            env=site.env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, timeout=60)
    # ...is what the hook reports, and the hook itself still exits 0.
    args, env = caller("networkmanager", "eth0")
    p = site.run(os.path.join(site.root, INSTALL_PATHS["networkmanager"]), args,
                 site.env(ETRNCTL=etrnctl, **env))
    # etrnctl(8): a relay that cannot be reached is temporary, EX_TEMPFAIL
    assert direct.returncode == 75, direct
    assert p.returncode == 0, p
    assert any(m.startswith("etrnctl exit 75: ") for m in site.messages()), (direct, site.log())
