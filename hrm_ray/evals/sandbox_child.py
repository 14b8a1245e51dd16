"""The child side of `sandbox.py`: run as a script by a fresh `python -I` in its own session, never imported.

It reads one JSON request from stdin (the limits, the scratch directory, the completion marker, the code and
its tests), points stdin at /dev/null, lowers its resource limits, installs the audit hook, then runs setup,
code and tests in one namespace. Its last line on stdout says how that went: `<marker> passed` or
`<marker> failed <json reason>`; without that line the parent judges by the exit status alone. Standard
library only: the sample runs with nothing of hrm_ray loaded.
"""
from __future__ import annotations

import errno
import json
import os
import resource
import sys
import types

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC

# Refused whatever their arguments: new processes, signals, the network, foreign code, raising limits.
_REFUSED = frozenset({
    "os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn", "os.system", "os.startfile",
    "subprocess.Popen", "pty.spawn", "os.kill", "os.killpg", "signal.pthread_kill",
    "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
    "socket.gethostbyname", "socket.gethostbyaddr", "socket.gethostbyname_ex", "webbrowser.open",
    "resource.setrlimit", "resource.prlimit",
})
# ctypes may load the interpreter itself (`import ctypes` does, numpy needs it) and libraries installed with
# it, not a system library by name (`CDLL("libc.so.6")`).
_LIBRARY_ROOTS = tuple(os.path.realpath(p) + os.sep for p in {sys.prefix, sys.base_prefix, sys.exec_prefix})

# Events that change the filesystem: (index of a path argument, index of its dir_fd argument or None).
_PATH_EVENTS: dict[str, tuple[tuple[int, int | None], ...]] = {
    "os.remove": ((0, 1),), "os.rmdir": ((0, 1),), "os.mkdir": ((0, 2),),
    "os.rename": ((0, 2), (1, 3)), "os.link": ((0, 2), (1, 3)), "os.symlink": ((1, 2),),
    "os.chmod": ((0, 2),), "os.chown": ((0, 3),), "os.utime": ((0, 3),), "os.truncate": ((0, None),),
    "os.chflags": ((0, None),), "os.lchflags": ((0, None),), "os.setxattr": ((0, None),),
    "os.removexattr": ((0, None),), "shutil.rmtree": ((0, 1),),
}


def _resolve(path, dir_fd) -> str | None:
    """The absolute real path an operation touches; None for an open file descriptor (already vetted)."""
    if isinstance(path, int):
        return None
    path = os.fsdecode(path)
    base = os.getcwd()
    if isinstance(dir_fd, int) and dir_fd >= 0 and not os.path.isabs(path):
        base = os.readlink(f"/proc/self/fd/{dir_fd}")
    return os.path.realpath(os.path.join(base, path))


def _install_guard(scratch: str) -> None:
    """Refuse, from now on, whatever could reach outside the scratch directory (see sandbox.py)."""
    allowed_files = {os.devnull}

    def inside(path, dir_fd=None) -> bool:
        real = _resolve(path, dir_fd)
        return real is None or real == scratch or real.startswith(scratch + os.sep) or real in allowed_files

    def hook(event: str, args: tuple) -> None:
        if event in _REFUSED:
            raise PermissionError(f"sandbox refused {event}{_describe(args)}")
        if event == "ctypes.dlopen" and args and args[0] is not None and not _installed_library(args[0]):
            raise PermissionError(f"sandbox refused ctypes.dlopen of {args[0]!r}")
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None, None))[:3]
            writing = (isinstance(flags, int) and flags & _WRITE_FLAGS) or (
                isinstance(mode, str) and any(c in mode for c in "wax+"))
            if writing and not inside(path):
                raise PermissionError(f"sandbox refused writing {path!r} outside the scratch directory")
        elif event in _PATH_EVENTS:
            for path_at, fd_at in _PATH_EVENTS[event]:
                path = args[path_at] if path_at < len(args) else None
                dir_fd = args[fd_at] if fd_at is not None and fd_at < len(args) else None
                if path is not None and not inside(path, dir_fd):
                    raise PermissionError(f"sandbox refused {event} of {path!r} outside the scratch directory")

    sys.addaudithook(hook)


def _installed_library(name) -> bool:
    path = os.fsdecode(name)
    return os.path.isabs(path) and os.path.realpath(path).startswith(_LIBRARY_ROOTS)


def _describe(args: tuple) -> str:
    if not args:
        return ""
    text = ", ".join(repr(a) for a in args[1:] if a is not None) if len(args) > 1 else ""
    return f" ({text[:120]})" if text else ""


def _set_limits(limits: dict[str, int]) -> None:
    """Lower soft and hard limits together (an unprivileged process cannot raise a hard limit again)."""
    for name, value in limits.items():
        which = getattr(resource, name)
        _soft, hard = resource.getrlimit(which)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        hard_value = value + 1 if name == "RLIMIT_CPU" and (hard == resource.RLIM_INFINITY or value < hard) \
            else value
        resource.setrlimit(which, (value, hard_value))


def _reason(exc: BaseException, source: str) -> str:
    if isinstance(exc, MemoryError):
        return "memory limit"
    if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
        return "file size limit"
    if isinstance(exc, SyntaxError):
        return f"SyntaxError: {exc.msg} (line {exc.lineno})"
    message = str(exc)
    if isinstance(exc, AssertionError):
        return f"AssertionError: {message} ({source.strip()})" if message else f"AssertionError: {source.strip()}"
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _run(request: dict) -> str | None:
    """Setup, code, then each test in one module namespace; the reason of the first failure, else None."""
    module = types.ModuleType("solution")
    sys.modules["solution"] = module
    steps = [("<setup>", request["setup"]), ("<solution>", request["code"])]
    steps += [(f"<test {i}>", test) for i, test in enumerate(request["tests"])]
    for filename, source in steps:
        try:
            exec(compile(source, filename, "exec"), module.__dict__)
        except BaseException as exc:  # noqa: BLE001 - SystemExit, KeyboardInterrupt... are a failed sample too
            return _reason(exc, source)[:500]
    return None


def main() -> None:
    request = json.loads(sys.stdin.buffer.read())
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - fd 0 is /dev/null now
    _set_limits(request["limits"])
    report_fd = os.dup(1)  # the verdict still reaches the parent if the sample closes or swaps stdout
    marker = request.pop("marker")
    if request["guard"]:
        _install_guard(request["scratch"])
    failure = _run(request)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001, S110 - a sample may have closed or replaced them
            pass
    verdict = "passed" if failure is None else f"failed {json.dumps(failure)}"
    os.write(report_fd, f"\n{marker} {verdict}\n".encode())


if __name__ == "__main__":
    main()
