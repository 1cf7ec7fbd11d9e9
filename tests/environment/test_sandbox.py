"""The backend-neutral parts: which limit stopped a program, output tails, the plain guard."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from agir_retrain.tasks.environment.contract import StoppedBy
from agir_retrain.tasks.environment.sandbox import (
    PlainSandbox,
    SandboxError,
    classify,
    exit_status,
    read_tail,
    wait_or_kill,
)

MEMORY = 'Traceback (most recent call last):\n  File "/agir/program.py", line 2\nMemoryError\n'
FORK = "    os.fork()\nBlockingIOError: [Errno 11] Resource temporarily unavailable\n"
FSIZE = "OSError: [Errno 27] File too large\n"


@pytest.mark.parametrize(
    ("code", "stderr", "timed_out", "processes_hit", "expected"),
    [
        (0, "", False, False, None),
        (1, "ValueError: x\n", False, False, None),
        (137, "", True, False, StoppedBy.TIMEOUT),
        (137, "", True, True, StoppedBy.PROCESSES),  # a fork bomb spinning at the cap
        (0, "", False, True, None),  # a refused fork it recovered from did not stop it
        (1, FORK, False, True, StoppedBy.PROCESSES),
        (1, FORK, False, None, StoppedBy.PROCESSES),  # no pids counter: read from its error
        (1, FORK, False, False, None),  # the counter says the cap was never reached
        (1, MEMORY, False, False, StoppedBy.MEMORY),
        (0, MEMORY, False, False, None),  # printed, but it exited cleanly
        (1, FSIZE, False, False, StoppedBy.FILE_SIZE),
        (128 + signal.SIGXFSZ, "", False, False, StoppedBy.FILE_SIZE),  # a non-Python writer
    ],
)
def test_classify(code, stderr, timed_out, processes_hit, expected):
    found = classify(code, stderr, timed_out=timed_out, processes_hit=processes_hit)
    assert found is expected


def test_exit_status_reports_signals_as_a_shell_does():
    assert (exit_status(0), exit_status(3), exit_status(-9), exit_status(-25)) == (0, 3, 137, 153)


def test_read_tail_keeps_the_last_2000_characters_of_utf8(tmp_path):
    path = tmp_path / "out"
    path.write_bytes(("é" * 3000 + "end").encode())
    tail = read_tail(path)
    assert len(tail) == 2000
    assert tail.endswith("é" * 1997 + "end")
    path.write_bytes(b"\xff\xfeok")  # not UTF-8: replaced, never an error
    assert read_tail(path) == "\ufffd\ufffdok"
    assert read_tail(tmp_path / "missing") == ""


def test_wait_or_kill_kills_the_whole_session_at_the_deadline():
    process = subprocess.Popen(
        ["sh", "-c", "sleep 60 & sleep 60"], start_new_session=True, stdout=subprocess.DEVNULL
    )
    start = time.monotonic()
    assert wait_or_kill(process, 0.3) is True
    assert time.monotonic() - start < 5
    assert process.returncode == -signal.SIGKILL
    quick = subprocess.Popen(["true"], start_new_session=True)
    assert wait_or_kill(quick, 5) is False
    assert quick.returncode == 0


def test_the_plain_backend_must_be_asked_for_by_name():
    with pytest.raises(SandboxError, match="no isolation"):
        PlainSandbox("/usr/bin/python3")


def test_the_seccomp_filter_builds_where_find_library_sees_nothing(monkeypatch):
    """Slim images have no ldconfig or compiler: libseccomp is loaded by its name instead."""
    import ctypes.util
    import sys

    from agir_retrain.tasks.environment import seccomp

    original = ctypes.util.find_library
    monkeypatch.setattr(
        ctypes.util, "find_library", lambda name: None if name == "seccomp" else original(name)
    )
    monkeypatch.delitem(sys.modules, "pyseccomp", raising=False)
    module = seccomp._pyseccomp()
    assert module.SyscallFilter(defaction=module.ALLOW) is not None
    assert ctypes.util.find_library("seccomp") is None  # given back as it was
