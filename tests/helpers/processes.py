"""Child processes that a test interrupts with a real SIGINT, whatever ignores SIGINT above the test run.

A process started from a background shell, ``nohup``, some CI runners or a mutation tool's workers inherits SIGINT
*ignored* (``SIG_IGN``), and Python then installs no ``KeyboardInterrupt`` handler: a SIGINT sent to the child is
silently dropped and a Ctrl-C test measures a run to completion. The command below re-installs Python's own handler
first, so the child behaves as it would under an interactive terminal.
"""
from __future__ import annotations

import sys

_RESTORE = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "sys.argv[0] = {module!r}; runpy.run_module({module!r}, run_name='__main__', alter_sys=True)")


def python_module(module: str, *args: str) -> list[str]:
    """The argv of ``python -m MODULE ARGS...`` with Python's default SIGINT handler installed in the child."""
    return [sys.executable, "-c", _RESTORE.format(module=module), *args]
