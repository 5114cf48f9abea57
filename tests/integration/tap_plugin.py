# tap_plugin: a pytest plugin that reports every test as one TAP line for
# automake's tap-driver.sh. TAP goes to the file descriptor named by
# RELAYD_TAP_FD (run-pytest.sh points it at the real stdout; pytest's own
# output goes to stderr), so nothing else can print a line starting "ok".
# It only reports; it never changes how tests run.

import os
import re

_state = {"out": None, "n": 0, "pending": {}, "plan_file": None}


def _emit(line):
    out = _state["out"]
    out.write(line + "\n")
    out.flush()


def _name(nodeid):
    # A '#' would start a TAP directive (SKIP/TODO); newlines would break the line.
    return re.sub(r"[#\r\n]", "_", nodeid)


def pytest_configure(config):
    fd = int(os.environ.get("RELAYD_TAP_FD", "1"))
    # dup() gives a non-inheritable descriptor: a daemon started by a test must
    # not keep the TAP pipe open after pytest has finished.
    newfd = os.dup(fd)
    if fd > 2:
        os.close(fd)
    _state["out"] = os.fdopen(newfd, "w", buffering=1)
    _state["plan_file"] = os.environ.get("RELAYD_TAP_DONE")


def _finish(nodeid, failed, skipped, why):
    _state["n"] += 1
    n = _state["n"]
    name = _name(nodeid)
    if failed:
        _emit("not ok %d - %s" % (n, name))
        for line in why.splitlines()[-40:]:
            _emit("# " + line)
    elif skipped:
        _emit("ok %d - %s # SKIP %s" % (n, name, _name(why.splitlines()[-1] if why else "")))
    else:
        _emit("ok %d - %s" % (n, name))


def pytest_collectreport(report):
    if report.failed:
        _finish("collect " + (report.nodeid or "tests"), True, False, str(report.longrepr))


def pytest_runtest_logreport(report):
    st = _state["pending"].setdefault(report.nodeid, {"failed": False, "skipped": False, "why": ""})
    if report.failed:
        st["failed"] = True
        st["why"] += "%s failed: %s\n" % (report.when, report.longreprtext)
    elif report.skipped:
        st["skipped"] = True
        if isinstance(report.longrepr, tuple):
            st["why"] += str(report.longrepr[2])
    if report.when == "teardown":
        del _state["pending"][report.nodeid]
        _finish(report.nodeid, st["failed"], st["skipped"], st["why"])


def pytest_sessionfinish(session, exitstatus):
    # Tests that never reached teardown (interrupted run) still count as failed.
    for nodeid, st in list(_state["pending"].items()):
        _finish(nodeid, True, False, st["why"] + "interrupted before teardown")
    _state["pending"].clear()
    if _state["n"] == 0:
        _finish("pytest collected no tests (exit status %s)" % exitstatus, True, False, "")
    _emit("1..%d" % _state["n"])
    if _state["plan_file"]:
        with open(_state["plan_file"], "w") as f:
            f.write("%d\n" % _state["n"])
