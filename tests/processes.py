"""Waiting for (and stopping) the processes tests launch, tolerant of a slow or busy machine.

A launch is never given a fixed time to finish: on a loaded 2-core machine a run that takes
40 s alone can take many minutes, and a test must not fail because the machine was busy.
A launch is given up only when it stops making progress: nothing new on its stdout / stderr
and no file written under the folders it works in for ``STALL_S`` seconds (a hung rank, a
collective that never completes). DeepSpeed JIT-builds its CPU communication op once per
environment and prints nothing while it compiles (minutes on 2 cores), hence the margin.
``CEILING_S`` only stops a run that keeps writing for ever (a loop that never ends).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

STALL_S = 900.0
CEILING_S = 4 * 3600.0
_POLL_S = 0.1
_FOOTPRINT_EVERY_S = 2.0  # how often the watched folders are scanned for new writes


def footprint(paths: Iterable[Path]) -> frozenset:
    """(path, size, mtime) of every file under ``paths``: changes whenever a run writes anything."""
    seen = []
    for root in map(Path, paths):
        files = [root] if root.is_file() else (root.rglob("*") if root.is_dir() else [])
        for f in files:
            try:
                st = f.stat()
            except OSError:  # removed while scanning (checkpoint pruning, a .tmp renamed)
                continue
            seen.append((str(f), st.st_size, st.st_mtime_ns))
    return frozenset(seen)


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> None:
    """``sig`` to a process and every descendant, group by group (a launcher such as torchrun
    starts each rank in a session of its own, so one killpg would orphan them)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return
    groups = set()
    for p in procs:
        try:
            groups.add(os.getpgid(p.pid))
        except ProcessLookupError:
            pass
    for group in groups:
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            pass


def tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.is_file() else ""


def wait(procs: Sequence[subprocess.Popen], watch: Iterable[Path], what: str,
         until: Callable[[], bool] | None = None, logs: Sequence[Path] = ()) -> None:
    """Block until ``until()`` holds (or, without it, until every process has exited), however long
    that takes while the processes make progress (see the module docstring).

    On a stall (or ``until`` still false when the processes have all exited) every process is
    killed and AssertionError names ``what`` with the tail of ``logs``.
    """
    watch = list(watch)
    started = last_change = last_scan = time.monotonic()
    seen = footprint(watch)

    def fail(reason: str) -> None:
        for p in procs:
            if p.poll() is None:
                kill_tree(p.pid)
        raise AssertionError(f"{what}: {reason}\n" + "\n".join(f"--- {log}\n{tail(log)}" for log in logs))

    while True:
        if until is not None and until():
            return
        if all(p.poll() is not None for p in procs):
            if until is None:
                return
            fail(f"ended (exit {[p.returncode for p in procs]}) before the awaited point")
        now = time.monotonic()
        if now - last_scan >= _FOOTPRINT_EVERY_S:
            last_scan, current = now, footprint(watch)
            if current != seen:
                seen, last_change = current, now
            elif now - last_change > STALL_S:
                fail(f"no output and no file written for {STALL_S:.0f} s: hung")
        if now - started > CEILING_S:
            fail(f"still running after {CEILING_S:.0f} s")
        time.sleep(_POLL_S)


def run(cmd: Sequence[str], logs: Path, *, cwd: Path, env: dict, watch: Iterable[Path] = (),
        what: str | None = None) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, capture_output=True, text=True)`` with output kept in ``logs``/<name>.out
    and .err and the progress-based wait: the result carries stdout, stderr and the exit code."""
    logs.mkdir(parents=True, exist_ok=True)
    script = next((Path(a).stem for a in map(str, cmd) if a.endswith(".py")), Path(cmd[0]).name)
    stamp = time.monotonic_ns()
    out, err = logs / f"{script}.{stamp}.out", logs / f"{script}.{stamp}.err"
    with open(out, "w") as o, open(err, "w") as e:
        proc = subprocess.Popen(list(cmd), cwd=cwd, env=env, stdout=o, stderr=e, text=True, start_new_session=True)
    wait([proc], [out, err, *watch], what or " ".join(map(str, cmd[:3])), logs=[out, err])
    return subprocess.CompletedProcess(list(cmd), proc.returncode, out.read_text(errors="replace"),
                                       err.read_text(errors="replace"))
