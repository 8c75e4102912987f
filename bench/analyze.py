"""Benchmark ``ctxdoctor analyze`` against the floor and a simple reference.

    .venv/bin/python bench/analyze.py                     # 100k and 1M spans (the targets)
    .venv/bin/python bench/analyze.py --sizes 10k         # smoke mode, a few seconds
    .venv/bin/python bench/analyze.py --sizes 10m         # the 10M-span, rotated-files check (long)

Generates (or reuses from ``bench/.cache/``) seeded dumps, then runs every pass as its own child
process, in the same run, so the figures are comparable and each peak RSS is that pass's alone.
Prints a table with the ratios and the targets, and writes the figures as JSON to
``bench/out/analyze-<date>.json``. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import dumpgen, measure

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = ROOT / "bench" / ".cache"
DEFAULT_OUT = ROOT / "bench" / "out"

# The targets, measured on the 1M-span dump.
TARGET_SIZE = "1m"
TARGET_FLOOR_RATIO = 1.0  # ctxdoctor wall / orjson floor wall, at most
TARGET_REFERENCE_SPEEDUP = 4.0  # reference wall / ctxdoctor wall, at least
TARGET_BYTES_PER_SPAN = 350  # ctxdoctor peak RSS / spans, at most
TARGET_PROTO_SPANS_PER_S = 1_000_000  # ctxdoctor over the proto file, at least
MEMORY_LIMIT_BYTES = 24 << 30  # the machine: 10M spans must fit

#: (name, input, what it is). ``json``/``pb`` name the dump file it reads.
PASSES: tuple[tuple[str, str, str], ...] = (
    ("floor", "json", "orjson.loads of every line, nothing else"),
    ("reference", "json", "orjson -> tuples, group by trace, sort, sweep per process"),
    ("ctxdoctor", "json", "ctxdoctor analyze --format json"),
    ("ctxdoctor-1job", "json", "the same with --jobs 1: one process"),
    ("ctxdoctor-read", "json", "ctxdoctor.readers.read_paths only"),
    ("proto-tuples", "pb", "upb protobuf -> tuples (the proto reading baseline)"),
    ("ctxdoctor-proto", "pb", "ctxdoctor analyze --format json over the proto file"),
    ("ctxdoctor-startup", "", "python -m ctxdoctor --version (fixed start-up cost)"),
)
DEFAULT_PASSES = [p[0] for p in PASSES]
#: At 10M spans the reference needs ~5 GB and minutes, and there is no proto file: only these.
PASSES_10M = ["floor", "ctxdoctor"]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Dumps
# ---------------------------------------------------------------------------------------------


def ensure_dump(size: str, seed: int, cache: Path, *, keep_stale: bool) -> tuple[Path, dict[str, Any]]:
    """The cached dump for (size, seed, generator version), generating it if needed."""
    n = dumpgen.SIZES[size]
    version = dumpgen.generator_version()
    target = cache / f"{size}-seed{seed}-{version}"
    if not keep_stale and cache.is_dir():
        for stale in cache.glob(f"{size}-seed{seed}-*"):
            if stale != target:
                log(f"removing stale cached dump {stale} (generator changed)")
                shutil.rmtree(stale, ignore_errors=True)
    meta_path = target / "meta.json"
    if meta_path.exists():
        meta: dict[str, Any] = json.loads(meta_path.read_text())
        meta["cached"] = True
        return target, meta
    rotate = size == "10m"
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{size}-", dir=cache))
    log(f"generating {size} ({n:,} spans, seed {seed}){' as rotated JSON files' if rotate else ''} ...")
    t0 = time.perf_counter()
    step = max(n // 10, 1)
    next_report = [step]

    def progress(done: int) -> None:
        if done >= next_report[0]:
            log(f"  {done:,} spans ({time.perf_counter() - t0:.0f} s)")
            next_report[0] += step

    written = dumpgen.write_dump(
        tmp, n, seed, proto=not rotate, rotate_bytes=dumpgen.ROTATE_BYTES if rotate else None, progress=progress
    )
    gen_s = time.perf_counter() - t0
    meta = {
        "size": size,
        "seed": seed,
        "generator_version": version,
        "spans": written.stats.spans,
        "json_files": [p.name for p in written.json_files],
        "json_bytes": written.json_bytes,
        "proto_file": written.proto_file.name if written.proto_file else None,
        "proto_bytes": written.proto_bytes,
        "generation_s": round(gen_s, 2),
        "stats": vars(written.stats) | {"depth": {str(k): v for k, v in sorted(written.stats.depth.items())}},
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    tmp.rename(target)
    log(f"  done in {gen_s:.1f} s: {written.json_bytes / 1e6:,.0f} MB JSON, {written.proto_bytes / 1e6:,.0f} MB proto")
    meta["cached"] = False
    return target, meta


# ---------------------------------------------------------------------------------------------
# Passes
# ---------------------------------------------------------------------------------------------


def ctxdoctor_available() -> str | None:
    """None when ``ctxdoctor analyze --format json --output`` can run, else why not."""
    if importlib.util.find_spec("ctxdoctor.cli") is None:
        return "ctxdoctor/cli.py does not exist yet"
    try:
        out = subprocess.run(
            [sys.executable, "-m", "ctxdoctor", "analyze", "--help"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env=os.environ | {"COLUMNS": "200"},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`python -m ctxdoctor analyze --help` failed: {exc}"
    if out.returncode != 0:
        return f"`python -m ctxdoctor analyze --help` exited {out.returncode}: {out.stderr.strip()[-300:]}"
    missing = [opt for opt in ("--format", "--output") if opt not in out.stdout]
    if missing:
        return f"`ctxdoctor analyze` has no {', '.join(missing)} option yet"
    return None


def command(name: str, files: list[Path], report: Path) -> list[str]:
    py = sys.executable
    if name in ("floor", "reference", "ctxdoctor-read", "proto-tuples"):
        return [py, "-m", "bench.passes", name, *map(str, files)]
    if name in ("ctxdoctor", "ctxdoctor-proto", "ctxdoctor-1job"):
        jobs = ["--jobs", "1"] if name == "ctxdoctor-1job" else []
        return [py, "-m", "ctxdoctor", "analyze", *map(str, files), "--format", "json", "--output", str(report), *jobs]
    if name == "ctxdoctor-startup":
        return [py, "-m", "ctxdoctor", "--version"]
    raise ValueError(name)


#: The passes that can also run over a baseline tree (``--baseline``), shown as ``NAME@base``.
BASELINE_PASSES = ("ctxdoctor", "ctxdoctor-1job", "ctxdoctor-proto")
BASE_SUFFIX = "@base"


def run_pass(
    name: str, files: list[Path], spans: int, truth: dict[str, int], *, tty: bool, cwd: Path | None = None
) -> dict[str, Any]:
    """One pass; with ``cwd`` (a baseline checkout) ``python -m ctxdoctor`` imports that tree's
    package, since the working directory comes first on ``sys.path`` for ``-m``."""
    with tempfile.TemporaryDirectory(prefix="ctxdoctor-bench-") as tmp:
        # The report goes to a file rather than /dev/null so its summary can be checked; rendering
        # and writing it cost the same either way.
        report = Path(tmp) / "report.json"
        m = measure.run(command(name, files, report), tty_stderr=tty, cwd=cwd or ROOT)
        res: dict[str, Any] = m.as_dict()
        res["ok"] = m.returncode == 0 and not m.timed_out
        problems: list[str] = []
        if m.timed_out:
            problems.append("timed out")
        if m.returncode != 0:
            problems.append(f"exit {m.returncode}: {(m.stderr or m.tty_output).strip()[-400:]}")
        if name.startswith("ctxdoctor") and name != "ctxdoctor-startup":
            if name != "ctxdoctor-read" and m.returncode == 0:
                try:
                    summary = json.loads(report.read_text())["summary"]
                except (OSError, ValueError, KeyError) as exc:
                    problems.append(f"no readable report summary: {exc}")
                    summary = {}
                res["summary"] = summary
                if summary and summary.get("spans") != spans:
                    problems.append(f"report says {summary.get('spans')} spans, the dump has {spans}")
                res["found_vs_truth"] = {
                    "suspected_orphans": summary.get("suspected_orphans"),
                    "true_orphans": truth.get("orphans"),
                    "missing_parents": summary.get("missing_parents"),
                    "true_missing_parent_spans": truth.get("missing_parent"),
                }
            if tty:
                res["progress_bar_seen"] = bool(re.search(r"reading|\d+(\.\d+)?/\d+(\.\d+)? [kMG]?B", m.tty_output))
    if m.stdout.strip().startswith("{") and name in ("floor", "reference", "ctxdoctor-read", "proto-tuples"):
        child = json.loads(m.stdout.strip().splitlines()[-1])
        res["work_s"] = child["work_s"]
        res["result"] = child["result"]
        got = child["result"].get("spans")
        if got is not None and got != spans:
            problems.append(f"read {got} spans, the dump has {spans}")
    res["problems"] = problems
    res["ok"] = not problems
    if name != "ctxdoctor-startup":
        res["spans"] = spans
        res["spans_per_s"] = spans / m.wall_s
        res["bytes_per_span"] = m.peak_rss_bytes / spans
    return res


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------


def ratios(passes: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    def wall(n: str) -> float | None:
        p = passes.get(n)
        return p["wall_s"] if p and p["ok"] else None

    def cpu(n: str) -> float | None:
        p = passes.get(n)
        return p["user_s"] + p["sys_s"] if p and p["ok"] else None

    floor, ref, ctx, proto = wall("floor"), wall("reference"), wall("ctxdoctor"), wall("ctxdoctor-proto")
    cfloor, cref, cctx = cpu("floor"), cpu("reference"), cpu("ctxdoctor")
    ctxp = passes.get("ctxdoctor")
    onep = passes.get("ctxdoctor-1job")
    protop = passes.get("ctxdoctor-proto")
    return {
        "ctxdoctor_over_floor": ctx / floor if ctx and floor else None,
        "reference_over_ctxdoctor": ref / ctx if ref and ctx else None,
        "ctxdoctor_bytes_per_span": ctxp["bytes_per_span"] if ctxp and ctxp["ok"] else None,
        "ctxdoctor_1job_bytes_per_span": onep["bytes_per_span"] if onep and onep["ok"] else None,
        "ctxdoctor_proto_spans_per_s": protop["spans_per_s"] if protop and proto else None,
        "reference_over_floor": ref / floor if ref and floor else None,
        # The same ratios in CPU seconds: less sensitive to other load on the machine.
        "ctxdoctor_over_floor_cpu": cctx / cfloor if cctx and cfloor else None,
        "reference_over_ctxdoctor_cpu": cref / cctx if cref and cctx else None,
    }


def targets(size: str, r: dict[str, float | None], passes: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    binding = size == TARGET_SIZE
    rows: list[tuple[str, float | None, str, float, bool]] = [
        ("analyze JSON wall <= 1.0x orjson floor", r["ctxdoctor_over_floor"], "x", TARGET_FLOOR_RATIO, False),
        (
            "analyze JSON >= 4x faster than reference",
            r["reference_over_ctxdoctor"],
            "x",
            TARGET_REFERENCE_SPEEDUP,
            True,
        ),
        ("analyze JSON peak RSS <= 350 B/span", r["ctxdoctor_bytes_per_span"], "B/span", TARGET_BYTES_PER_SPAN, False),
        # The lean mode, for the record: the default trades memory for speed (bench/README.md).
        (
            "analyze JSON peak RSS <= 350 B/span, --jobs 1",
            r.get("ctxdoctor_1job_bytes_per_span"),
            "B/span",
            TARGET_BYTES_PER_SPAN,
            False,
        ),
        ("analyze proto >= 1M spans/s", r["ctxdoctor_proto_spans_per_s"], "spans/s", TARGET_PROTO_SPANS_PER_S, True),
    ]
    out = []
    for label, value, unit, limit, at_least in rows:
        if value is None:
            verdict = "n/a"
        else:
            ok = value >= limit if at_least else value <= limit
            verdict = ("PASS" if ok else "FAIL") if binding else ("(pass)" if ok else "(fail)")
        out.append({"target": label, "value": value, "unit": unit, "limit": limit, "verdict": verdict})
    if size == "10m":
        p = passes.get("ctxdoctor")
        ok = bool(p and p["ok"] and p["peak_rss_bytes"] < MEMORY_LIMIT_BYTES)
        out = [
            {
                "target": "10M spans analysed without running out of memory (24 GiB)",
                "value": p["peak_rss_bytes"] if p else None,
                "unit": "bytes",
                "limit": MEMORY_LIMIT_BYTES,
                "verdict": "PASS" if ok else "FAIL",
            },
            {
                "target": "progress bar on a TTY",
                "value": None,
                "unit": "",
                "limit": None,
                "verdict": "PASS" if p and p.get("progress_bar_seen") else "FAIL",
            },
        ]
    return out


def _num(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _rate(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v / 1e6:.2f}M" if v >= 1e6 else f"{v / 1e3:.0f}k"


def print_size(
    size: str, meta: dict[str, Any], passes: dict[str, dict[str, Any]], r: dict[str, Any], tg: list[dict[str, Any]]
) -> None:
    st = meta["stats"]
    print(
        f"\n== {size}: {meta['spans']:,} spans in {st['lines']:,} lines; {len(meta['json_files'])} JSON file(s) "
        f"{meta['json_bytes'] / 1e6:,.0f} MB"
        + (f", proto {meta['proto_bytes'] / 1e6:,.0f} MB" if meta["proto_bytes"] else "")
        + f"; {st['orphans']:,} orphans, {st['missing_parent']} missing-parent spans, {st['traces']:,} traces "
        f"(generated in {meta['generation_s']} s{', cached' if meta.get('cached') else ''})"
    )
    hdr = (
        f"{'pass':<20} {'in':<5} {'wall s':>7} {'work s':>7} {'spans/s':>8} {'RSS MB':>7} {'B/span':>7} "
        f"{'cpu s':>6} {'load':>5}  note"
    )
    print(hdr)
    print("-" * len(hdr))
    shown = [(n, i) for name, i, _what in PASSES for n in (name, name + BASE_SUFFIX)]
    for name, inp in shown:
        p = passes.get(name)
        if p is None:
            continue
        if p.get("skipped"):
            print(f"{name:<20} {inp:<5} skipped: {p['skipped']}")
            continue
        note = "; ".join(p["problems"]) if p["problems"] else ""
        fv = p.get("found_vs_truth")
        if fv and not note:
            note = f"found {fv['suspected_orphans']} orphans (truth {fv['true_orphans']})"
        if "progress_bar_seen" in p:
            note += f"; progress bar on TTY: {'yes' if p['progress_bar_seen'] else 'NO'}"
        pss = p.get("extra", {}).get("pss_sum_peak_bytes")
        if pss:  # forked: RSS MB is the summed PSS (see measure.py); the summed RSS overcounts
            note += f"; {p['extra']['rss_sum_peak_bytes'] / 1e6:.0f} MB summed RSS"
        print(
            f"{name:<20} {inp:<5} {p['wall_s']:>7.2f} {_num(p.get('work_s'), '.2f'):>7} "
            f"{_rate(p.get('spans_per_s')):>8} {p['peak_rss_bytes'] / 1e6:>7.0f} "
            f"{_num(p.get('bytes_per_span'), '.0f'):>7} {p['user_s'] + p['sys_s']:>6.2f} "
            f"{p['load_before']:>5.2f}  {note}"
        )
    print(
        "ratios: ctxdoctor/floor "
        + _num(r["ctxdoctor_over_floor"], ".2f")
        + "x, reference/ctxdoctor "
        + _num(r["reference_over_ctxdoctor"], ".2f")
        + "x, reference/floor "
        + _num(r["reference_over_floor"], ".2f")
        + "x, ctxdoctor RSS "
        + _num(r["ctxdoctor_bytes_per_span"], ".0f")
        + " B/span, ctxdoctor proto "
        + _rate(r["ctxdoctor_proto_spans_per_s"])
        + " spans/s"
    )
    print(
        "  in CPU seconds: ctxdoctor/floor "
        + _num(r["ctxdoctor_over_floor_cpu"], ".2f")
        + "x, reference/ctxdoctor "
        + _num(r["reference_over_ctxdoctor_cpu"], ".2f")
        + "x"
    )
    for name in BASELINE_PASSES:
        head, base = passes.get(name), passes.get(name + BASE_SUFFIX)
        if head and base and head["ok"] and base["ok"]:
            print(
                f"  {name} against the baseline: wall {head['wall_s'] / base['wall_s']:.2f}x, "
                f"cpu {(head['user_s'] + head['sys_s']) / (base['user_s'] + base['sys_s']):.2f}x, "
                f"peak RSS {head['peak_rss_bytes'] / base['peak_rss_bytes']:.2f}x"
            )
    for t in tg:
        val = t["value"]
        shown = (
            "-"
            if val is None
            else (
                _rate(val)
                if t["unit"] == "spans/s"
                else f"{val / 2**30:.2f} GiB"
                if t["unit"] == "bytes"
                else f"{val:.0f} B/span"
                if t["unit"] == "B/span"
                else f"{val:.2f}{t['unit']}"
            )
        )
        print(f"  target {t['target']:<58} {shown:>12}  {t['verdict']}")


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        info["mem_total_kb"] = int(Path("/proc/meminfo").read_text().split()[1])
    except OSError:
        pass
    for mod in ("orjson", "msgspec", "google.protobuf"):
        try:
            info[mod] = __import__(mod, fromlist=["__version__"]).__version__
        except (ImportError, AttributeError):  # informational only
            info[mod] = None
    return info


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return " ".join(f"{x:.2f}" for x in os.getloadavg())


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100k,1m", help=f"comma-separated, of {','.join(dumpgen.SIZES)}")
    ap.add_argument("--seed", type=int, default=dumpgen.DEFAULT_SEED)
    ap.add_argument("--passes", default=None, help=f"comma-separated subset of {','.join(DEFAULT_PASSES)}")
    ap.add_argument("--repeat", type=int, default=1, help="run each pass N times, keep the fastest")
    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    ap.add_argument(
        "--keep-cache",
        action="store_true",
        help="keep the 10M dump (~8 GB) after the run, and cached dumps of older generator versions",
    )
    ap.add_argument(
        "--baseline",
        type=Path,
        default=None,
        metavar="DIR",
        help="also run the ctxdoctor passes over the package in DIR (a checkout of an older commit, e.g. "
        "`git worktree add /tmp/old REV`), alternately with this tree's, on the same dumps",
    )
    args = ap.parse_args(argv)
    if args.baseline is not None and not (args.baseline / "ctxdoctor" / "__main__.py").is_file():
        ap.error(f"--baseline {args.baseline}: no ctxdoctor/__main__.py there")

    sizes = [s.strip().lower() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in dumpgen.SIZES]
    if unknown:
        ap.error(f"unknown size(s) {unknown}; choose from {list(dumpgen.SIZES)}")
    chosen = [p.strip() for p in args.passes.split(",")] if args.passes else None
    if chosen and (bad := [p for p in chosen if p not in DEFAULT_PASSES]):
        ap.error(f"unknown pass(es) {bad}; choose from {DEFAULT_PASSES}")
    if importlib.util.find_spec("orjson") is None:
        print("orjson is not installed (it is the floor): .venv/bin/pip install -e '.[bench]'", file=sys.stderr)
        return 2
    why_not = ctxdoctor_available()
    if why_not:
        log(f"NOTE: skipping the ctxdoctor passes: {why_not}")

    started = dt.datetime.now()
    doc: dict[str, Any] = {
        "date": started.isoformat(timespec="seconds"),
        "command": " ".join(
            [Path(sys.executable).name, "bench/analyze.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "machine": machine(),
        "uptime_start": uptime(),
        "sizes": {},
    }
    log(f"load: {doc['uptime_start']}")
    exit_code = 0
    for size in sizes:
        directory, meta = ensure_dump(size, args.seed, args.cache_dir, keep_stale=args.keep_cache)
        json_files = [directory / f for f in meta["json_files"]]
        proto = [directory / meta["proto_file"]] if meta["proto_file"] else []
        names = chosen or (PASSES_10M if size == "10m" else DEFAULT_PASSES)
        passes: dict[str, dict[str, Any]] = {}
        for name, inp, _ in PASSES:
            if name not in names:
                continue
            if why_not and name.startswith("ctxdoctor"):
                passes[name] = {"skipped": why_not, "ok": False}
                continue
            files = json_files if inp == "json" else proto if inp == "pb" else []
            if inp == "pb" and not proto:
                continue
            # With a baseline, the two trees take turns, so a change in the machine's load hits both.
            trees: list[tuple[str, Path | None]] = [(name, None)]
            if args.baseline is not None and name in BASELINE_PASSES:
                trees.append((name + BASE_SUFFIX, args.baseline.resolve()))
            bests: dict[str, dict[str, Any]] = {}
            for _ in range(max(args.repeat, 1)):
                for shown, cwd in trees:
                    log(f"[{size}] {shown} ...")
                    tty = size == "10m" and name == "ctxdoctor"
                    res = run_pass(name, files, meta["spans"], meta["stats"], tty=tty, cwd=cwd)
                    best = bests.get(shown)
                    if best is None or (res["ok"] and res["wall_s"] < best["wall_s"]):
                        bests[shown] = res
            for shown, best in bests.items():
                passes[shown] = best
                if not best["ok"]:
                    exit_code = 1
                    log(f"  {shown} FAILED: {'; '.join(best['problems'])}")
        r = ratios(passes)
        tg = targets(size, r, passes)
        doc["sizes"][size] = {"dump": meta, "passes": passes, "ratios": r, "targets": tg}
        print_size(size, meta, passes, r, tg)
        if size == "10m" and not args.keep_cache:
            log(f"removing the 10M dump {directory} (pass --keep-cache to keep it)")
            shutil.rmtree(directory, ignore_errors=True)
    doc["uptime_end"] = uptime()
    print(f"\nload at start: {doc['uptime_start']}\nload at end:   {doc['uptime_end']}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / f"analyze-{started:%Y-%m-%dT%H-%M-%S}.json"
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"figures written to {out}")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
