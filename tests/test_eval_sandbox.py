"""The code sandbox against hostile samples: each is a failed sample with its reason, never a hung or killed
evaluation, and nothing of it is left running or written outside its scratch directory."""
from __future__ import annotations

import os
import re
import socket
import textwrap
import time
from pathlib import Path

import pytest

from hrm_ray.evals.sandbox import CodeSample, run_many, run_tests

ADD = "def add(a, b):\n    return a + b\n"
ADD_TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]
pytestmark = pytest.mark.timeout(60)


def _live_in_session(sid: int) -> list[int]:
    """Processes of session `sid` that are still running (zombies left to a non-reaping init do not count)."""
    alive = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()  # state, ppid, pgrp, session, ...
        if fields[0] != "Z" and int(fields[3]) == sid:
            alive.append(int(name))
    return alive


def _session_of(result) -> int:
    match = re.search(r"SID (\d+)", result.stdout_tail)
    assert match, result
    return int(match.group(1))


def test_a_correct_solution_passes_in_a_scratch_directory_with_a_cleared_environment():
    code = ADD + textwrap.dedent("""
        import os, sys
        print("cwd", os.getcwd())
        assert os.environ.get("HOME") == os.getcwd() and "PATH" not in os.environ, dict(os.environ)
        assert sys.stdin.read() == ""
        with open("notes.txt", "w") as f:
            f.write("scratch is writable")
    """)
    result = run_tests(code, [*ADD_TESTS, "assert open('notes.txt').read() == 'scratch is writable'"])
    assert result.passed and result.reason == "passed", result
    scratch = re.search(r"cwd (\S+)", result.stdout_tail).group(1)
    assert not os.path.exists(scratch)
    assert re.fullmatch(r"\s*cwd \S+\s*", result.stdout_tail), "the completion marker leaked into the output"


def test_a_wrong_solution_fails_with_the_failing_assertion():
    result = run_tests("def add(a, b):\n    return a - b\n", ADD_TESTS)
    assert not result.passed
    assert result.reason == "AssertionError: assert add(1, 2) == 3"
    syntax = run_tests("def add(a, b) return a", ADD_TESTS)
    assert not syntax.passed and syntax.reason.startswith("SyntaxError"), syntax


@pytest.mark.timeout(30)
def test_an_infinite_loop_times_out():
    start = time.monotonic()
    result = run_tests("while True:\n    pass\n", ADD_TESTS, timeout_s=1.0)
    assert (result.passed, result.reason) == (False, "timeout after 1.0 s")
    assert time.monotonic() - start < 5


@pytest.mark.timeout(30)
def test_cpu_time_is_limited_apart_from_the_wall_clock():
    result = run_tests("while True:\n    pass\n", [], timeout_s=10.0, cpu_s=1)
    assert (result.passed, result.reason) == (False, "cpu time limit")


@pytest.mark.timeout(30)
def test_a_fork_bomb_is_refused_and_leaves_nothing_running():
    code = "import os\nprint('SID', os.getsid(0), flush=True)\nwhile True:\n    os.fork()\n"
    result = run_tests(code, ADD_TESTS, timeout_s=2.0)
    assert not result.passed and "os.fork" in result.reason, result
    assert _live_in_session(_session_of(result)) == []


@pytest.mark.timeout(30)
def test_without_the_audit_hook_forked_children_die_with_the_sample():
    """The operating-system layer alone: 16 spinning processes, all gone once the deadline passes."""
    code = textwrap.dedent("""
        import os
        print('SID', os.getsid(0), flush=True)
        for _ in range(4):
            os.fork()
        while True:
            pass
    """)
    result = run_tests(code, [], timeout_s=1.0, _audit_guard=False)
    assert result.reason == "timeout after 1.0 s", result
    assert _live_in_session(_session_of(result)) == []


@pytest.mark.timeout(30)
@pytest.mark.skipif(os.geteuid() == 0, reason="the kernel does not apply RLIMIT_NPROC to root")
def test_without_the_audit_hook_the_process_limit_stops_a_fork_bomb():
    code = textwrap.dedent("""
        import os
        print('SID', os.getsid(0), flush=True)
        for _ in range(8):
            try:
                os.fork()
            except BlockingIOError:
                print('fork refused', flush=True)
                break
        while True:
            pass
    """)
    result = run_tests(code, [], timeout_s=1.0, _audit_guard=False)
    assert "fork refused" in result.stdout_tail, result
    assert _live_in_session(_session_of(result)) == []


@pytest.mark.parametrize("code, refused", [
    ("import subprocess\nsubprocess.run(['true'])\n", "subprocess.Popen"),
    ("import os, signal\nos.kill(1, signal.SIGTERM)\n", "os.kill"),
    ("import ctypes\nctypes.CDLL('libc.so.6')\n", "ctypes.dlopen"),
    ("import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))\n", "resource.setrlimit"),
])
def test_processes_signals_system_libraries_and_raised_limits_are_refused(code, refused):
    result = run_tests(code, [])
    assert not result.passed and refused in result.reason, result


def test_a_huge_allocation_is_a_memory_limit():
    result = run_tests("x = bytearray(64 * 2**30)\n", [], memory_mb=256)
    assert (result.passed, result.reason) == (False, "memory limit")


def test_writes_outside_the_scratch_directory_are_refused(tmp_path):
    outside, victim = tmp_path / "escaped.txt", tmp_path / "victim.txt"
    victim.write_text("keep me")
    write = run_tests(f"open({str(outside)!r}, 'w').write('x')\n", [])
    assert not write.passed and "outside the scratch directory" in write.reason, write
    assert not outside.exists()
    remove = run_tests(f"import os\nos.remove({str(victim)!r})\n", [])
    assert not remove.passed and "os.remove" in remove.reason, remove
    assert victim.read_text() == "keep me"
    escape = run_tests(f"import os\nos.symlink({str(tmp_path)!r}, 'out')\nopen('out/escaped.txt', 'w')\n", [])
    assert not escape.passed and "outside the scratch directory" in escape.reason, escape
    assert not outside.exists()


def test_exiting_early_with_status_zero_is_not_a_pass():
    result = run_tests(ADD + "import os\nos._exit(0)\n", ADD_TESTS)
    assert (result.passed, result.reason) == (False, "exit code 0 before the tests finished")
    midway = run_tests(ADD, [ADD_TESTS[0], "import os; os._exit(0)", "assert add(2, 2) == 5"])
    assert not midway.passed, midway
    sys_exit = run_tests(ADD + "import sys\nsys.exit(0)\n", ADD_TESTS)
    assert (sys_exit.passed, sys_exit.reason) == (False, "SystemExit: 0")


def test_a_socket_connection_is_refused():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        code = f"import socket\ns = socket.socket()\ns.connect(('127.0.0.1', {port}))\n"
        result = run_tests(code, [])
        assert not result.passed and "socket.connect" in result.reason, result
        with pytest.raises(BlockingIOError):
            listener.accept()


@pytest.mark.timeout(30)
def test_megabytes_of_output_stop_at_the_cap():
    start = time.monotonic()
    result = run_tests("while True:\n    print('x' * 1000)\n", [], timeout_s=5.0, max_output_kb=64)
    assert (result.passed, result.reason) == (False, "output limit")
    assert time.monotonic() - start < 4, "killed at the cap, not at the deadline"
    assert 0 < len(result.stdout_tail) <= 4096
    one_write = run_tests("print('y' * 10_000_000)\n", [], timeout_s=5.0)
    assert one_write.reason == "output limit", one_write


@pytest.mark.timeout(60)
def test_a_batch_of_mixed_samples_finishes_with_the_right_counts():
    good = [CodeSample(ADD, ADD_TESTS), CodeSample("def sq(x):\n    return x * x\n", ["assert sq(3) == 9"]),
            CodeSample("def f():\n    return math.pi\n", ["assert f() > 3"], setup="import math"),
            CodeSample(ADD + "print('chatty')\n", ADD_TESTS), CodeSample("x = 1\n", [])]
    bad = [CodeSample("def add(a, b):\n    return 0\n", ADD_TESTS), CodeSample("while True:\n    pass\n", []),
           CodeSample("x = bytearray(64 * 2**30)\n", []), CodeSample("import os\nos._exit(0)\n", ADD_TESTS),
           CodeSample("import os\nos.system('true')\n", [])]
    results = run_many(good + bad, max_parallel=4, timeout_s=1.5)
    assert [r.passed for r in results] == [True] * 5 + [False] * 5, results
    reasons = [r.reason for r in results[5:]]
    assert reasons[0].startswith("AssertionError") and reasons[1] == "timeout after 1.5 s", reasons
    assert reasons[2] == "memory limit" and reasons[3].startswith("exit code 0"), reasons
    assert "os.system" in reasons[4], reasons
