"""The structure-varying corpus: cells of the matrix apps, recorded from real SDKs over real OTLP.

    python bench/corpus.py --list                 # the cells (seeded design)
    python bench/corpus.py                        # record every cell not yet cached
    python bench/corpus.py --only 'py-*' --force  # re-record some

A *cell* is one run of ``fixtures/apps/python/matrix.py`` or ``fixtures/apps/node/matrix.js``
with one value on every axis (``AXES``). A *family* is one value of one axis, such as
``dispatcher=root``: the unit that ``bench/accuracy.py`` holds out. The design covers every
family of every axis several times, with the other axes drawn at random, so that no family is
seen only in one combination.

Recordings go to ``bench/.cache/corpus/<cell>/`` (gitignored): ``dump.json``, ``truth.jsonl``,
``cell.json``. Each is checked against its ground truth the way ``fixtures/record.py`` checks a
fixture (every root labelled, orphans are roots whose intended parent was exported in another
trace); a ``fixed`` cell must have no orphan at all.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "fixtures"))

import record as _record  # noqa: E402  (fixtures/record.py: the recorder and its consistency check)

CACHE = ROOT / "bench" / ".cache" / "corpus"
NODE_APP = ROOT / "fixtures" / "apps" / "node" / "matrix.js"

#: The axes and their values per runtime. ``executor`` (run_in_executor) is Python's alone.
AXES: dict[str, dict[str, tuple[str, ...]]] = {
    "python": {
        "dispatcher": ("root", "server", "consumer", "test"),
        "handoff": ("thread", "pool", "process_pool", "child", "executor", "fire", "timer"),
        "wait": ("await", "fire", "fanout", "map"),
        "inflight": ("1", "4", "8", "32"),
        "background": ("none", "interval", "irregular", "worker_timer"),
        "load": ("idle", "saturated"),
        "shared_attr": ("0", "1"),
        "mode": ("naive", "fixed"),
    },
    "nodejs": {
        "dispatcher": ("root", "server", "consumer", "test"),
        "handoff": ("thread", "pool", "process_pool", "child", "fire", "timer"),
        "wait": ("await", "fire", "fanout", "map"),
        "inflight": ("1", "4", "8", "32"),
        "background": ("none", "interval", "irregular", "worker_timer"),
        "load": ("idle", "saturated"),
        "shared_attr": ("0", "1"),
        "mode": ("naive", "fixed"),
    },
}
#: Cells per family: every value of every axis appears at least this often in the design.
PER_FAMILY = 2
#: Share of cells drawn ``naive`` when the mode axis is not the one being covered.
NAIVE_SHARE = 0.7


@dataclass(frozen=True)
class Cell:
    runtime: str
    dispatcher: str
    handoff: str
    wait: str
    inflight: str
    background: str
    load: str
    shared_attr: str
    mode: str
    seed: int
    protocol: str

    @property
    def name(self) -> str:
        rt = "py" if self.runtime == "python" else "node"
        return (
            f"{rt}-{self.dispatcher}-{self.handoff}-{self.wait}-c{self.inflight}-{self.background}-"
            f"{self.load}-a{self.shared_attr}-{self.mode}-s{self.seed}"
        )

    def families(self) -> list[str]:
        return [f"{axis}={getattr(self, axis)}" for axis in AXES[self.runtime]] + [f"runtime={self.runtime}"]

    def items(self) -> int:
        if self.handoff == "child":
            return 12  # a process per task: each costs an interpreter start
        return max(16, int(1.5 * int(self.inflight)))

    def env(self) -> dict[str, str]:
        workers = "2" if self.seed % 3 == 0 else ("8" if self.seed % 3 == 1 else "4")
        return {
            "CTX_SEED": str(self.seed),
            "CTX_MODE": self.mode,
            "CTX_DISPATCHER": self.dispatcher,
            "CTX_HANDOFF": self.handoff,
            "CTX_WAIT": self.wait,
            "CTX_INFLIGHT": self.inflight,
            "CTX_ITEMS": str(self.items()),
            "CTX_WORKERS": workers,
            "CTX_FANOUT": "4",
            "CTX_BACKGROUND": self.background,
            "CTX_BG_MS": str(5 + self.seed * 37 % 96),
            "CTX_LOAD": self.load,
            "CTX_SHARED_ATTR": self.shared_attr,
            "CTX_POOL_LIB": "workerpool" if self.seed % 2 else "piscina",
        }

    def command(self) -> list[str]:
        if self.runtime == "python":
            if self.dispatcher == "test":
                return ["{python}", "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", "{apps}/python",
                        "-c", "{apps}/python/matrix_pytest.ini", "{apps}/python/matrix_cases.py"]
            return ["{python}", "{apps}/python/matrix.py"]
        return ["node", str(NODE_APP)]  # matrix.js runs itself under `node --test` for dispatcher=test


def design(seed: int = 11) -> list[Cell]:
    """Every family ``PER_FAMILY`` times per runtime, the other axes drawn at random."""
    rng = random.Random(seed)
    cells: list[Cell] = []
    n = 0
    for runtime, axes in AXES.items():
        for axis, values in axes.items():
            for value in values:
                for _ in range(PER_FAMILY):
                    n += 1
                    pick = {a: rng.choice(vs) for a, vs in axes.items()}
                    if axis != "mode":
                        pick["mode"] = "naive" if rng.random() < NAIVE_SHARE else "fixed"
                    pick[axis] = value
                    if pick["dispatcher"] == "test" and runtime == "python":
                        pick["inflight"] = "1"  # pytest runs one test case at a time
                    protocol = "grpc" if runtime == "python" else rng.choice(["http/protobuf", "grpc"])
                    cells.append(Cell(runtime=runtime, seed=n, protocol=protocol, **pick))
    # Alternate the runtimes, so that a recording cut short still covers both.
    py = [c for c in cells if c.runtime == "python"]
    node = [c for c in cells if c.runtime == "nodejs"]
    cells = [c for pair in zip(py, node, strict=False) for c in pair] + py[len(node) :] + node[len(py) :]
    seen: set[str] = set()
    unique = []
    for c in cells:
        if c.name not in seen:
            seen.add(c.name)
            unique.append(c)
    return unique


def check_cell(cell: Cell, dump: Path, truth_path: Path) -> list[str]:
    spans = _record.read_dump(dump)
    truth = _record.read_truth(truth_path)
    if not spans:
        return ["the dump holds no spans"]
    found = {(str((r.get("intended_parent") or {}).get("name")), r["name"]) for r in truth if r["label"] == "orphan"}
    scen = _record.Scenario(
        name=cell.name, folder=CACHE, description="", runtime=cell.runtime, kind=cell.mode, boundary=None,
        command=(), env={}, protocol=cell.protocol, timeout_s=1,
        expect_gaps=tuple({"parent_name": p, "orphan_name": o, "boundary": None} for p, o in found),
    )
    problems = _record.check(spans, truth, scen)
    if cell.mode == "fixed" and found:
        problems.append(f"a fixed cell has {len(found)} orphan patterns")
    if cell.mode == "naive" and not found:
        problems.append("a naive cell has no orphan")
    return problems


def record_cell(cell: Cell, out: Path = CACHE, timeout_s: float = 300) -> dict[str, object]:
    scen = _record.Scenario(
        name=cell.name, folder=out / cell.name, description=cell.name, runtime=cell.runtime,
        kind="naive" if cell.mode == "naive" else "fixed", boundary=None, command=tuple(cell.command()),
        env=cell.env(), protocol=cell.protocol, timeout_s=timeout_s, expect_gaps=(),
    )
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ctxdoctor-corpus-") as tmp:
        dump, truth, facts = _record.run_app(scen, Path(tmp))
        problems = check_cell(cell, dump, truth)
        if problems:
            raise _record.RecordError("; ".join(problems[:5]))
        dest = out / cell.name
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(dump, dest / "dump.json")
        shutil.copyfile(truth, dest / "truth.jsonl")
        meta = {**asdict(cell), "name": cell.name, "families": cell.families(), **facts,
                "record_seconds": round(time.monotonic() - started, 2)}
        (dest / "cell.json").write_text(json.dumps(meta, indent=1) + "\n")
        return meta


def select(cells: Iterable[Cell], patterns: list[str]) -> list[Cell]:
    if not patterns:
        return list(cells)
    return [c for c in cells if any(fnmatch.fnmatchcase(c.name, p) for p in patterns)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--only", action="append", default=[], help="glob over cell names (repeatable)")
    ap.add_argument("--force", action="store_true", help="re-record cells already cached")
    ap.add_argument("--stale-before", type=float, metavar="EPOCH",
                    help="with --force: re-record only cells cached before this Unix time")
    ap.add_argument("--out", type=Path, default=CACHE)
    ap.add_argument("--seed", type=int, default=11, help="seed of the design")
    ap.add_argument("--jobs", type=int, default=1, help="cells recorded at once (default 1)")
    ap.add_argument("--no-priority", action="store_true", help="do not raise the recorder's scheduling priority")
    args = ap.parse_args(argv)
    if not args.no_priority:
        # The dumps are timing data: where allowed (root), the recorder and the apps it starts run
        # ahead of other work on the machine, so that a busy machine distorts them less.
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, -10)
    cells = select(design(args.seed), args.only)
    if args.list:
        for c in cells:
            print(c.name)
        print(f"{len(cells)} cells", file=sys.stderr)
        return 0
    todo = []
    for i, c in enumerate(cells, 1):
        cached = args.out / c.name / "cell.json"
        if cached.exists() and (
            not args.force or (args.stale_before is not None and cached.stat().st_mtime >= args.stale_before)
        ):
            continue
        if c.runtime == "nodejs" and not NODE_APP.exists():
            print(f"[{i}/{len(cells)}] {c.name}: skipped (no Node.js matrix app)", flush=True)
            continue
        todo.append((i, c))

    def one(item: tuple[int, Cell]) -> bool:
        i, c = item
        try:
            meta = record_cell(c, args.out)
            spans, secs = meta["received_spans"], meta["record_seconds"]
            print(f"[{i}/{len(cells)}] {c.name}: {spans} spans, {secs} s", flush=True)
            return True
        except (_record.RecordError, OSError) as exc:
            print(f"[{i}/{len(cells)}] {c.name}: FAILED {str(exc)[:400]}", flush=True)
            return False

    # Cells are independent runs on their own free ports; ``--jobs`` above 1 trades timing
    # noise (the apps share the cores) for wall time.
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        failed = sum(not ok for ok in pool.map(one, todo))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
