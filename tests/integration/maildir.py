# maildir: what a private site MTA (postfix_site.py, exim_site.py) delivered
# into a Maildir, read back for the tests, and a bounded wait for it.

import os
import time


def read_maildir(path):
    """The messages in the Maildir at path (new/ then cur/, by name), as bytes."""
    out = []
    for sub in ("new", "cur"):
        d = os.path.join(path, sub)
        if os.path.isdir(d):
            for name in sorted(os.listdir(d)):
                with open(os.path.join(d, name), "rb") as f:
                    out.append(f.read())
    return out


def wait_maildir(path, n, timeout, what, log):
    """At least n messages in the Maildir at path within timeout seconds;
    what names it and log() gives the MTA's log for the failure message."""
    deadline = time.monotonic() + timeout
    while True:
        box = read_maildir(path)
        if len(box) >= n:
            return box
        if time.monotonic() >= deadline:
            raise AssertionError("%d of %d messages in %s after %ss; log:\n%s" % (
                len(box), n, what, timeout, log()[-3000:]))
        time.sleep(0.1)
