"""Named kill points in the mint flow, for the reliability suite (tests/system/).

`reached(name)` does nothing unless the environment variable PORTAL_TEST_KILL_AT equals `name`
(read at call time), in which case the process kills itself with SIGKILL: no cleanup, no
`finally`, no atexit, exactly as if the OOM killer or a node failure struck at that point. The
suite starts gunicorn with the variable set and then checks that reconciliation accounts for
every key upstream (docs/security.md, "Process killed at any point of the flow").

`manage.py check --deploy` warns while the variable is set outside DEBUG/sandbox (keys.W007).
"""

from __future__ import annotations

import os
import signal

ENV = "PORTAL_TEST_KILL_AT"
# Where keys/minting.py calls reached(). "After the request was sent" has no hook: the suite holds
# the create in the stand-in Requesty and kills the worker from outside meanwhile.
POINTS = ("before_upstream", "after_reply", "after_commit")


def reached(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
