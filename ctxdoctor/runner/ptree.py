"""The command's process tree, sampled while it runs: which processes lived, for how long.

The probe sees the processes that run Node.js or Python; this sees every process the command
started (a shell, a binary), with its real lifetime, including Python pool workers that leave
through ``os._exit`` and so never report their own end. ``observed.py`` turns the long-lived
ones that exported nothing into "silent processes".
"""

from __future__ import annotations

import re
import threading
import time

from ctxdoctor.probe.facts import SeenProcess

#: How often the tree is read (each read scans /proc). A process that lives less than this may
#: be missed; a silent process only matters when it lived longer (see diagnose/observed.py).
#: The first read comes after one interval, so a command that ends at once costs nothing.
INTERVAL_S = 0.5
#: Arguments shown of a command line after its program (enough to tell gunicorn's master from a
#: Celery worker; reports and JUnit files are shared, so no more than needed).
_SHOWN_ARGS = 2
#: An option whose value is not shown: it may be a credential (``--password x``, ``--token=x``).
_SECRET_OPTION = re.compile(r"pass|secret|token|key|auth|cred|session|cookie", re.IGNORECASE)


def command_label(argv: list[str]) -> str:
    """What a report says a process ran: the program and its first arguments, paths cut to their
    last part, an option's ``=value`` dropped, and the value after a credential-like option
    replaced by ``…`` (command lines carry secrets as often as headers do)."""
    if not argv:
        return ""
    shown = [argv[0].rsplit("/", 1)[-1]]
    hide_next = False
    for arg in argv[1 : 1 + _SHOWN_ARGS]:
        if hide_next:
            shown.append("…")
            hide_next = False
            continue
        if arg.startswith("-"):
            name, eq, _ = arg.partition("=")
            shown.append(f"{name}=…" if eq else name)
            hide_next = not eq and bool(_SECRET_OPTION.search(name))
            continue
        shown.append(arg.rsplit("/", 1)[-1])
    return " ".join(shown)[:120]


class ProcessSampler:
    """Reads the tree under ``root_pid`` every ``INTERVAL_S`` on a daemon thread until ``stop``."""

    def __init__(self, root_pid: int) -> None:
        self._root = root_pid
        self._seen: dict[int, dict[str, object]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ctxdoctor-ptree", daemon=True)

    def start(self) -> ProcessSampler:
        # psutil is imported on the sampler's thread: the command starts without waiting for it.
        self._thread.start()
        return self

    def _loop(self) -> None:
        if self._stop.wait(INTERVAL_S):
            return
        try:
            import psutil
        except ImportError:  # the tree is a nice-to-have; the run works without it
            return
        try:
            root = psutil.Process(self._root)
        except psutil.Error:
            return
        self._sample(root)
        while not self._stop.wait(INTERVAL_S):
            self._sample(root)

    def _sample(self, root: object) -> None:
        import psutil as ps

        now = time.time()
        try:
            procs = [root, *root.children(recursive=True)]  # type: ignore[attr-defined]
        except ps.Error:
            procs = []
        parents: set[int] = set()
        for p in procs:
            try:
                with p.oneshot():
                    pid, ppid, started = p.pid, p.ppid(), p.create_time()
                    cmd = p.cmdline()
            except ps.Error:
                continue
            parents.add(ppid)
            entry = self._seen.get(pid)
            if entry is None or entry["started"] != started:  # a reused pid is another process
                name = command_label(cmd)
                entry = self._seen[pid] = {
                    "pid": pid,
                    "parent_pid": ppid,
                    "command": name,
                    "started": started,
                    "last_seen": now,
                    "has_children": False,
                }
            entry["last_seen"] = now
        for pid in parents:
            if pid in self._seen:
                self._seen[pid]["has_children"] = True

    def stop(self) -> tuple[SeenProcess, ...]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        return tuple(SeenProcess(**e) for e in self._seen.values())  # type: ignore[arg-type]
