"""Run one command as a child process and measure it: wall time, CPU and its own peak RSS.

Each command runs under a fresh, minimal wrapper (``python -S``, ~8 MB) that spawns it and reaps
it with ``os.wait4``, which returns the rusage of exactly that child. The wrapper is needed
because Linux carries the pre-exec RSS of whoever spawned a process into its ``ru_maxrss``: a
pass spawned straight from the harness (which may hold hundreds of MB after generating a dump)
would report the harness's size, and ``RUSAGE_CHILDREN`` is a high-water mark over all children.
The wrapper's own small RSS is the floor below which no figure can go.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import signal
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: Spawns argv[1] (a JSON list), reaps it, and writes its wall time and rusage to fd argv[2].
#: It also samples the memory of the command and the processes it forked (``ctxdoctor analyze
#: --jobs`` forks readers; ``ru_maxrss`` is the largest single process, not
#: their sum): every 20 ms the summed RSS (an upper bound: a page shared after fork counts once
#: per process), and, while there is more than one process, every 100 ms the summed PSS from
#: ``smaps_rollup`` (a shared page split between its sharers: the memory really in use; reading
#: it costs the kernel a page-table walk, hence the slower rate).
_WRAPPER = """
import json, os, sys, threading, time
cmd, fd = json.loads(sys.argv[1]), int(sys.argv[2])
page = os.sysconf("SC_PAGE_SIZE")
t0 = time.perf_counter()
pid = os.posix_spawnp(cmd[0], cmd, os.environ)
peak = {"rss_sum": 0, "pss_sum": 0}
done = threading.Event()
def rss(p):
    try:
        with open(f"/proc/{p}/statm") as f:
            return int(f.read().split()[1]) * page
    except (OSError, ValueError, IndexError):
        return 0
def pss(p):
    try:
        with open(f"/proc/{p}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0
def kids(p):
    try:
        with open(f"/proc/{p}/task/{p}/children") as f:
            return [int(k) for k in f.read().split()]
    except (OSError, ValueError):
        return []
def sample():
    n = 0
    while not done.wait(0.02):
        tree, i = [pid], 0
        while i < len(tree):
            tree += kids(tree[i])
            i += 1
        peak["rss_sum"] = max(peak["rss_sum"], sum(rss(p) for p in tree))
        if len(tree) > 1 and n % 5 == 0:
            peak["pss_sum"] = max(peak["pss_sum"], sum(pss(p) for p in tree))
        n += 1
threading.Thread(target=sample, daemon=True).start()
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - t0
done.set()
os.write(fd, json.dumps({"wall": wall, "status": status, "utime": ru.ru_utime, "stime": ru.ru_stime,
                         "maxrss_kb": ru.ru_maxrss, **peak}).encode())
os.close(fd)
"""


@dataclass
class Measured:
    cmd: list[str]
    returncode: int
    wall_s: float
    user_s: float
    sys_s: float
    peak_rss_bytes: int  # the larger of the biggest process's peak RSS and the processes' summed PSS
    load_before: float
    stdout: str = ""
    stderr: str = ""
    tty_output: str = ""
    timed_out: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        # Keep the JSON small: the tails are enough to see what went wrong.
        d["stdout"] = self.stdout[-2000:]
        d["stderr"] = self.stderr[-2000:]
        d["tty_output"] = self.tty_output[-2000:]
        return d


def run(
    cmd: list[str],
    *,
    timeout: float = 3600.0,
    tty_stderr: bool = False,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
) -> Measured:
    """Run ``cmd`` to completion (killed after ``timeout`` seconds). With ``tty_stderr`` the
    child's stderr is a pseudo-terminal, as a user's terminal would be, and what it wrote there
    is returned in ``tty_output``."""
    load = os.getloadavg()[0]
    out_r, out_w = os.pipe()
    err_r, err_w = pty.openpty() if tty_stderr else os.pipe()
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}

    def drain(fd: int) -> None:
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:  # EIO: the pty's other side closed
                break
            if not data:
                break
            chunks[fd].append(data)
        os.close(fd)

    full_env = dict(os.environ if env is None else env)
    if tty_stderr:
        full_env.setdefault("TERM", "xterm-256color")
        full_env["COLUMNS"] = "100"
    res_r, res_w = os.pipe()
    wrapper = [sys.executable, "-S", "-c", _WRAPPER, json.dumps(cmd), str(res_w)]
    proc = subprocess.Popen(
        wrapper,
        stdin=subprocess.DEVNULL,
        stdout=out_w,
        stderr=err_w,
        cwd=cwd,
        env=full_env,
        pass_fds=(res_w,),
        start_new_session=True,
    )
    os.close(out_w)
    os.close(err_w)
    os.close(res_w)
    chunks[res_r] = []
    readers = [threading.Thread(target=drain, args=(fd,), daemon=True) for fd in (out_r, err_r, res_r)]
    for r in readers:
        r.start()
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the wrapper and the measured command

    watchdog = threading.Timer(timeout, kill)
    watchdog.start()
    try:
        proc.wait()
    finally:
        watchdog.cancel()
    for r in readers:
        r.join(timeout=10)
    stdout = b"".join(chunks[out_r]).decode(errors="replace")
    stderr = b"".join(chunks[err_r]).decode(errors="replace")
    raw = b"".join(chunks[res_r])
    if raw:
        fig = json.loads(raw)
        rc = os.waitstatus_to_exitcode(fig["status"])
    else:  # the wrapper itself failed or was killed
        fig = {"wall": float("nan"), "utime": 0.0, "stime": 0.0, "maxrss_kb": 0}
        rc = proc.returncode if proc.returncode else -9
    return Measured(
        cmd=cmd,
        returncode=rc,
        wall_s=fig["wall"],
        user_s=fig["utime"],
        sys_s=fig["stime"],
        peak_rss_bytes=max(fig["maxrss_kb"] * 1024, fig.get("pss_sum", 0)),  # Linux reports KiB
        load_before=load,
        stdout=stdout,
        stderr="" if tty_stderr else stderr,
        tty_output=stderr if tty_stderr else "",
        timed_out=timed_out.is_set(),
        extra={"rss_sum_peak_bytes": fig.get("rss_sum", 0), "pss_sum_peak_bytes": fig.get("pss_sum", 0)},
    )
