"""The /baseline worker process's initializer (standard library only, so that starting the worker,
and testing it, costs no import of JAX or the server's stack)."""

from __future__ import annotations

import os
import threading
import time


def baseline_worker_init() -> None:
    """The /baseline worker process runs at a lower CPU priority than the server, so a baseline
    evaluation takes the CPU the sessions' steps leave; and it exits when the server process is
    gone (however the server ended: a worker left behind holds a gigabyte of compiled programs)."""
    try:
        os.nice(int(os.environ.get("INFERENCEGYM_BASELINE_NICE") or 10))
    except OSError:
        pass
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="inferencegym-baseline-orphan-watch", daemon=True).start()
