"""The seccomp filter of the bwrap jail: system calls a cleanup program never needs, denied.

Built once per process with libseccomp (through ``pyseccomp``, a ctypes binding with the
same API as libseccomp's own Python module) and handed to bubblewrap as classic BPF
(``--seccomp FD``). Everything else is allowed: the jail's namespaces, read-only system
folders and limits do the rest. A denied call fails with EPERM (io_uring's with ENOSYS, as
on a kernel without it, so runtimes fall back), and system calls of another architecture
(the 32-bit ABI on x86-64) kill the caller: the filter's rules are written for the native one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from functools import cache
from types import ModuleType

from agir_retrain.tasks.environment.sandbox import SandboxError

# Why each group is denied: what it would let a program do that cleaning a disk never needs.
DENIED: dict[str, tuple[str, ...]] = {
    # asynchronous I/O that bypasses per-call filtering
    "io_uring": ("io_uring_setup", "io_uring_enter", "io_uring_register"),
    # inspecting or changing other processes (the jail's own included)
    "tracing": ("ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd"),
    # kernel programs, keys and perf counters: broad kernel attack surface
    "kernel": ("bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key"),
    # mounts and namespaces: the jail's layout is fixed before the program starts
    "mounts": (
        "mount", "umount2", "pivot_root", "chroot", "move_mount", "fsopen", "fsconfig",
        "fsmount", "fspick", "open_tree", "mount_setattr", "unshare", "setns",
        "name_to_handle_at", "open_by_handle_at",
    ),
    # the machine itself
    "machine": (
        "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
        "reboot", "swapon", "swapoff", "acct", "quotactl", "quotactl_fd", "syslog",
        "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "iopl", "ioperm",
        "uselib", "vhangup", "lookup_dcookie", "fanotify_init", "personality",
    ),
}  # fmt: skip
_NOT_THERE = frozenset({"io_uring_setup", "io_uring_enter", "io_uring_register"})


SONAME = "libseccomp.so.2"


def _pyseccomp() -> ModuleType:
    """``pyseccomp``, also where ``ctypes.util.find_library`` finds nothing (a slim image).

    ``find_library`` asks ``ldconfig`` or a compiler, which slim images lack, though the
    dynamic loader finds the library by its name; then that name is given to pyseccomp.
    """
    try:
        import pyseccomp

        return pyseccomp
    except RuntimeError:
        ctypes.CDLL(SONAME)  # OSError if the library is not there at all
    original = ctypes.util.find_library
    ctypes.util.find_library = lambda name: SONAME if name == "seccomp" else original(name)
    try:
        import pyseccomp

        return pyseccomp
    finally:
        ctypes.util.find_library = original


@cache
def filter_program() -> bytes:
    """The filter as classic BPF, as bwrap's ``--seccomp`` reads it."""
    try:
        seccomp = _pyseccomp()
    except (ImportError, RuntimeError, OSError) as exc:  # the module or the library is missing
        raise SandboxError(
            f"cannot build the sandbox's seccomp filter ({exc}): pip install pyseccomp, "
            "and the libseccomp2 system package"
        ) from exc
    rules = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    for names in DENIED.values():
        for name in names:
            code = errno.ENOSYS if name in _NOT_THERE else errno.EPERM
            try:
                rules.add_rule(seccomp.ERRNO(code), name)
            except (OSError, ValueError, RuntimeError):  # unknown to this libseccomp or arch
                continue
    with os.fdopen(os.memfd_create("agir-seccomp", os.MFD_CLOEXEC), "w+b") as out:
        rules.export_bpf(out)
        out.seek(0)
        program = out.read()
    if not program or len(program) % 8:
        raise SandboxError(f"libseccomp exported a filter of {len(program)} bytes")
    return program
