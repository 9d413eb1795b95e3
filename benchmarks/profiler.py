"""Where a strategy's server spends its time: py-spy attached to the benchmark server.

    .venv/bin/python -m benchmarks.profiler mr-store --dataset small [--requests 5]

starts ``benchmarks/server.py`` on uvicorn as the suite does (fresh and warmed up), attaches
``py-spy record`` to it (every thread, idle samples left out: the event loop waiting in
``epoll`` is not work), fetches the strategy's response ``--requests`` times with
``benchmarks/probe.py``, then prints the functions that held the most samples, by own time
and by inclusive time, and per thread. The raw stacks (one line per stack, py-spy's
"collapsed" format: feed them to flamegraph.pl or speedscope) are kept under
``benchmarks/results/profiles/``. Needs ``py-spy`` (``pip install py-spy``) and the right to
ptrace the server (root, or ``kernel.yama.ptrace_scope=0``). Sampling takes CPU from the
server on a small machine, so the timings printed here are only a guide: the suite's are the
figures.
"""

from __future__ import annotations

import argparse
import collections
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

from . import datasets as ds
from . import measure
from .strategies import BY_NAME, STACKS

PROFILES = pathlib.Path(__file__).resolve().parent / "results" / "profiles"
ATTACH_WAIT = 0.5  # seconds for py-spy to attach before the first request
TOP = 25  # functions listed


def _frame(frame: str) -> str:
    """``function (path/to/module.py:123)`` shortened to ``function (module.py:123)``."""
    name, _, where = frame.partition(" (")
    return f"{name} ({os.path.basename(where.rstrip(')'))})" if where else name


def summarize(raw: pathlib.Path, top: int = TOP) -> list[str]:
    """Own and inclusive samples per function, and samples per thread, from collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread, frames = frames[0], [_frame(f) for f in frames[1:]]
        total += count
        threads[thread] += count
        if frames:
            own[frames[-1]] += count
            for frame in set(frames):
                inclusive[frame] += count
    lines = [f"{total} samples"]
    for title, counter in (("own", own), ("inclusive", inclusive), ("thread", threads)):
        lines.append(f"\n-- by {title} samples --")
        lines += [f"{n / total:6.1%}  {name}" for name, n in counter.most_common(top)]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profiler", description=__doc__)
    parser.add_argument("strategy", choices=sorted(BY_NAME))
    parser.add_argument("--dataset", default="large", choices=ds.DATASETS)
    parser.add_argument("--stack", default="h11", choices=sorted(STACKS))
    parser.add_argument("--quick", action="store_true", help="the --quick size of the data")
    parser.add_argument("--requests", type=int, default=3, help="requests while sampling")
    parser.add_argument("--rate", type=int, default=200, help="samples per second")
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(pathlib.Path(sys.executable).with_name("py-spy"))
    strategy, stack = BY_NAME[args.strategy], STACKS[args.stack]
    dataset = ds.ensure(args.dataset, quick=args.quick)
    ds.warm_page_cache(dataset)
    data = ds.DATA_ROOT / ("quick" if args.quick else "full")
    PROFILES.mkdir(parents=True, exist_ok=True)
    raw = PROFILES / f"{strategy.name}-{dataset.name}-{args.stack}.txt"
    log = (PROFILES / "server.log").open("ab")
    with measure.server(stack, data, ds.DATA_ROOT / "tmp", log) as running:
        url = running.url(strategy.path, dataset.name)
        if strategy.prime:
            measure.probe(url)
        command = [py_spy, "record", "--pid", str(running.pid), "--rate", str(args.rate),
                   "--threads", "--format", "raw", "--output", str(raw)]  # fmt: skip
        spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(ATTACH_WAIT)
        for _ in range(args.requests):
            result = measure.probe(url)
            print(
                f"TTFB {result['ttfb_s'] * 1000:.1f} ms, total {result['total_s']:.3f} s, "
                f"{dataset.size / result['total_s'] / 1e6:.0f} MB/s (while sampled)"
            )
        spy.send_signal(signal.SIGINT)
        _, errors = spy.communicate(timeout=60)
    if not raw.exists():
        raise SystemExit(f"py-spy wrote nothing: {errors.decode(errors='replace')[-500:]}")
    print("\n".join(summarize(raw)))
    print(f"\nraw stacks: {raw}")


if __name__ == "__main__":
    main()
