"""A Python app with no OpenTelemetry: a thread, a thread pool and a process, each printing.

Runs on any Python 3.10+; the exit code comes from PLAIN_EXIT so a test can see it passed on.
"""

import builtins
import multiprocessing
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor


def square(x):
    return x * x


def main():
    out = []
    t = threading.Thread(target=lambda: out.append("thread"))
    t.start()
    t.join()
    with ThreadPoolExecutor(2) as pool:
        out.append(f"pool {sum(pool.map(square, range(4)))}")
        out.append(f"submit {pool.submit(square, 5).result()}")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as procs:
        out.append(f"procs {procs.apply_async(square, (6,)).get(timeout=60)}")
    p = ctx.Process(target=square, args=(7,))
    p.start()
    p.join()
    out.append(f"process {p.exitcode}")
    out.append(f"site {getattr(builtins, 'USER_SITECUSTOMIZE', 'none')}")
    print("; ".join(out))
    sys.stdout.flush()
    return int(os.environ.get("PLAIN_EXIT", "0"))


if __name__ == "__main__":
    sys.exit(main())
