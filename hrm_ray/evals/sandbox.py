"""Run generated code against its tests in a throwaway process (MBPP-style code correctness).

Every sample is its own fresh `python -I -B -X utf8` (no user site, no PYTHON* variables) started in a new
session with stdin from /dev/null, no inherited descriptors, a cleared environment (HOME, TMPDIR, LANG only)
and a fresh scratch directory as its working directory, removed afterwards. Whatever the sample does, the
evaluation gets a `SandboxResult` back: a failed sample with its reason, never a hang or a crash.

What holds, from the operating system:
- a wall-clock deadline, after which (and after every sample) the whole process group gets SIGKILL, again
  and again until no live process is left in it: children that outlive the sample die with it;
- resource limits the child sets on itself before it reads a line of the sample (soft = hard, so an
  unprivileged sample cannot raise them): RLIMIT_AS (memory: a huge allocation is a MemoryError), RLIMIT_CPU,
  RLIMIT_FSIZE, RLIMIT_NOFILE, RLIMIT_CORE 0 and RLIMIT_NPROC (the tasks this user already runs plus a few;
  the kernel does not apply it to root). They are set in the child rather than in a `preexec_fn`, which is
  unsafe in a threaded parent such as `run_many`'s pool, Ray's workers or torch;
- output read through a cap: a sample that floods stdout is killed and failed with "output limit".

What holds, from Python only: an audit hook (PEP 578, `sandbox_child.py`) installed before the sample runs,
which Python code cannot remove. It refuses writes, removals, renames, mkdir, chmod... outside the scratch
directory; sockets (connect, bind, send, name lookups); new processes (fork, exec, spawn, subprocess,
os.system), signals to any process, ctypes loading a system library, and raising resource limits. This is what contains a fork bomb
written by a model when the evaluation runs as root, where RLIMIT_NPROC does not apply.

What this is not: a security boundary. It guards the machine against accidents and runaway resource use in
model output. Code written to escape (through a C extension, `_posixsubprocess`, reading files it should not,
or a race on a symlink in the scratch directory) can: run evaluations of untrusted code in a container or VM.
A sample passes only when its tests ran to the end: the child prints a per-sample random marker after the
last test, and passed means that marker seen and exit status 0 (an early `os._exit(0)` fails).
"""
from __future__ import annotations

import json
import math
import os
import re
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

_CHILD = Path(__file__).with_name("sandbox_child.py")
_EXTRA_TASKS = 32  # threads/processes a sample may add to what its user already runs (RLIMIT_NPROC)
_TAIL_BYTES = 4096
_READ_CHUNK = 65536


@dataclass(frozen=True)
class SandboxResult:
    passed: bool
    reason: str  # "passed", or why not: "timeout after 10.0 s", "memory limit", "AssertionError: ..."
    stdout_tail: str = ""  # the last few KB of what the sample printed (stdout and stderr together)


@dataclass(frozen=True)
class CodeSample:
    """One program and the test statements (`assert f(1) == 2`) it must pass; `setup` runs first."""
    code: str
    tests: list[str] = field(default_factory=list)
    setup: str = ""


def run_tests(code: str, tests: list[str], *, setup: str = "", timeout_s: float = 10.0,
              memory_mb: int = 512, cpu_s: float | None = None, max_file_mb: int = 16,
              max_output_kb: int = 64, _audit_guard: bool = True) -> SandboxResult:
    """Run setup, code, then each test statement in a sandboxed child; passed when every test ran.

    `cpu_s` defaults to the wall-clock timeout plus one second. `_audit_guard=False` leaves out the audit
    hook, so that tests can check what the operating-system limits hold alone.
    """
    marker = secrets.token_hex(16)
    scratch = os.path.realpath(tempfile.mkdtemp(prefix="hrm-ray-sandbox-"))
    request = {"marker": marker, "scratch": scratch, "guard": _audit_guard, "setup": setup, "code": code,
               "tests": list(tests),
               "limits": _limits(memory_mb, cpu_s if cpu_s is not None else timeout_s + 1.0, max_file_mb)}
    try:
        return _execute(request, scratch, timeout_s, max_output_kb * 1024)
    finally:
        _remove_scratch(scratch)


def run_many(samples: Sequence[CodeSample], *, max_parallel: int | None = None,
             **limits) -> list[SandboxResult]:
    """`run_tests` over many samples, `max_parallel` children at a time (default: the CPU count); results in
    the order of `samples`. `limits` are `run_tests`'s keyword arguments (timeout_s, memory_mb...)."""
    workers = max(1, max_parallel or os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox") as pool:
        futures = [pool.submit(run_tests, s.code, s.tests, setup=s.setup, **limits) for s in samples]
        return [f.result() for f in futures]


def _limits(memory_mb: int, cpu_s: float, max_file_mb: int) -> dict[str, int]:
    return {"RLIMIT_AS": memory_mb * 2**20, "RLIMIT_CPU": max(1, math.ceil(cpu_s)),
            "RLIMIT_FSIZE": max_file_mb * 2**20, "RLIMIT_NOFILE": 64, "RLIMIT_CORE": 0,
            "RLIMIT_NPROC": _tasks_of_user(os.getuid()) + _EXTRA_TASKS}


def _execute(request: dict, scratch: str, timeout_s: float, max_output: int) -> SandboxResult:
    deadline = time.monotonic() + timeout_s
    env = {"HOME": scratch, "TMPDIR": scratch, "LANG": "C.UTF-8"}
    proc = subprocess.Popen(
        [sys.executable, "-I", "-B", "-X", "utf8", str(_CHILD)], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=scratch, env=env, close_fds=True,
        start_new_session=True)
    try:
        _send(proc, json.dumps(request).encode())
        output, stopped = _collect(proc, deadline, max_output + 1024)  # room for the marker line
    finally:
        _kill_group(proc)
    return _verdict(output, request["marker"], proc.returncode, stopped, timeout_s)


def _send(proc: subprocess.Popen, payload: bytes) -> None:
    with suppress(BrokenPipeError):  # a child that died at once is judged by its exit status
        proc.stdin.write(payload)
    with suppress(BrokenPipeError):
        proc.stdin.close()


def _collect(proc: subprocess.Popen, deadline: float, cap: int) -> tuple[bytes, str | None]:
    """Read stdout until EOF, the deadline or the cap; after the child exits, stop once the pipe goes quiet
    (a grandchild may hold it open). Returns the bytes and why reading stopped early: "timeout", "output"."""
    out = bytearray()
    fd = proc.stdout.fileno()
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return bytes(out), "timeout"
            exited = proc.poll() is not None
            if not selector.select(min(remaining, 0.05 if exited else 0.5)):
                if exited:
                    return bytes(out), None
                continue
            chunk = os.read(fd, _READ_CHUNK)
            if not chunk:
                return bytes(out), None
            out += chunk
            if len(out) > cap:
                return bytes(out), "output"


def _verdict(output: bytes, marker: str, returncode: int | None, stopped: str | None,
             timeout_s: float) -> SandboxResult:
    matches = list(re.finditer(rb"\n?" + marker.encode() + rb" (passed|failed)([^\n]*)\n?", output))
    match = matches[-1] if matches else None
    printed = output[:match.start()] + output[match.end():] if match else output
    tail = printed[-_TAIL_BYTES:].decode("utf-8", errors="replace")
    if stopped == "timeout":
        return SandboxResult(False, f"timeout after {timeout_s:.1f} s", tail)
    if stopped == "output":
        return SandboxResult(False, "output limit", tail)
    if match and match.group(1) == b"failed":
        return SandboxResult(False, json.loads(match.group(2).strip() or b'"failed"'), tail)
    if match and returncode == 0:
        return SandboxResult(True, "passed", tail)
    return SandboxResult(False, _exit_reason(returncode, finished=match is not None), tail)


def _exit_reason(returncode: int | None, *, finished: bool) -> str:
    if returncode is not None and returncode < 0:
        sig = signal.Signals(-returncode)
        return "cpu time limit" if sig == signal.SIGXCPU else f"killed by signal {sig.name}"
    if returncode == 0 and not finished:
        return "exit code 0 before the tests finished"
    return f"exit code {returncode}"


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the sample's process group until none of it is alive, and reap the child."""
    pgid = proc.pid  # start_new_session: the child leads its own session and group
    for _ in range(200):
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        if proc.poll() is None:
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1.0)
        if proc.returncode is not None and not _live_members(pgid):
            break
        time.sleep(0.01)
    for stream in (proc.stdin, proc.stdout):
        with suppress(OSError):
            stream.close()


def _live_members(pgid: int) -> list[int]:
    """Processes of group `pgid` that are not zombies (from /proc; none known where there is no /proc)."""
    members = []
    for pid in _proc_pids():
        stat = _read_stat(pid)
        if stat and stat[2] != "Z" and stat[4] == str(pgid):
            members.append(pid)
    return members


def _tasks_of_user(uid: int) -> int:
    """Threads of all processes of `uid`: what RLIMIT_NPROC counts (0 where /proc is missing)."""
    tasks = 0
    for pid in _proc_pids():
        with suppress(OSError):
            if os.stat(f"/proc/{pid}").st_uid == uid:
                tasks += len(os.listdir(f"/proc/{pid}/task"))
    return tasks


def _proc_pids() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []


def _read_stat(pid: int) -> list[str] | None:
    """/proc/PID/stat split after the command name: [pid, comm, state, ppid, pgrp, session, ...]."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    head, _, rest = raw.rpartition(")")
    return head.split(" (", 1) + rest.split()


def _remove_scratch(path: str) -> None:
    """Remove the scratch directory, first making every directory in it writable (a sample may chmod)."""
    with suppress(OSError):
        os.chmod(path, 0o700)
    for root, dirs, _files in os.walk(path):
        for name in dirs:
            with suppress(OSError):
                os.chmod(os.path.join(root, name), 0o700)
    shutil.rmtree(path, ignore_errors=True)
