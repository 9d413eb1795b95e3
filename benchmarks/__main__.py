"""``python -m benchmarks``: the whole suite, from data generation to plots and targets.

For each uvicorn stack, dataset and strategy it takes *transfer* runs (time to first content
byte, total time, throughput, bytes on the wire, the server's peak RSS growth and CPU time)
and *disk* runs (``curl -o``, ``curl`` + ``unzip``, and ``multiresp.client.download`` when
importable), each in a fresh server process (see ``measure.py``), repeated ``--repeat``
times, interleaved across strategies so that a burst of noise on this shared machine does not
land on every run of one strategy. It then prints the machine, the table and the targets
(PASS/FAIL), and writes ``results.json``, ``results.md`` and the plots under
``benchmarks/results/<timestamp>/``.

    .venv/bin/python -m benchmarks --quick          # about a minute: smaller data, one stack
    .venv/bin/python -m benchmarks                  # the full suite, both stacks
    .venv/bin/python -m benchmarks --datasets large --strategies mr-store,block-reader
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import time
from typing import Any

import psutil

from . import datasets as ds
from . import measure, report
from .strategies import BY_NAME, STACKS, STRATEGIES, Strategy, client_available, importable

RESULTS_ROOT = pathlib.Path(__file__).resolve().parent / "results"
GIB = 1 << 30  # bytes
REFERENCE_NAMES = ("block-reader", "memory-ceiling", "fileresponse", "zipstream-store",
                   "zipstream-deflate")  # fmt: skip


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, Any]:
    """What the figures depend on: CPU, cores, memory, Python, the server stack, the load."""
    cpu = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    curl = subprocess.run(["curl", "--version"], capture_output=True, text=True, check=False)
    packages = ("uvicorn", "h11", "httptools", "uvloop", "starlette", "anyio", "zipstream-ng",
                "isal", "httpx", "multiresp")  # fmt: skip
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "ram_gib": round(psutil.virtual_memory().total / GIB, 1),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": platform.platform(),
        "curl": " ".join(curl.stdout.split()[:2]),  # "curl 7.88.1"
        "packages": {name: _version(name) for name in packages},
        "load_average": os.getloadavg(),
    }


def machine_lines(info: dict[str, Any], stacks: list[str]) -> list[str]:
    packages = info["packages"]
    lines = [
        f"CPU: {info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable), "
        f"{info['ram_gib']} GiB RAM",
        f"Python: {info['python']} on {info['os']}",
        f"load average at start: {', '.join(f'{x:.2f}' for x in info['load_average'])}",
    ]
    for key in stacks:
        stack = STACKS[key]
        http = f"{stack.http} {packages.get(stack.http, '?')}"
        loop = stack.loop if stack.loop == "asyncio" else f"{stack.loop} {packages['uvloop']}"
        lines.append(f"stack {stack.name}: uvicorn {packages['uvicorn']}, {http}, {loop}")
    lines.append(
        f"starlette {packages['starlette']}, anyio {packages['anyio']}, zipstream-ng "
        f"{packages['zipstream-ng']}, isal {packages['isal']}, {info['curl']}"
    )
    return lines


def _choose(given: str, known: list[str], what: str) -> list[str]:
    if given == "all":
        return known
    chosen = [name.strip() for name in given.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in known]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(known)})")
    return chosen


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small datasets, one run each, h11 stack only, time to disk on "
        "the large dataset only: about a minute",
    )
    parser.add_argument(
        "--datasets",
        default="all",
        help=f"comma-separated, from {', '.join(ds.DATASETS)} (default: all)",
    )
    parser.add_argument(
        "--strategies",
        default="all",
        help="comma-separated strategy names (see --list; default: all)",
    )
    parser.add_argument(
        "--stack",
        default=None,
        help="comma-separated, from h11, httptools (default: both; h11 with --quick)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="runs per measurement, the median is kept (default 3; 1 with --quick)",
    )
    parser.add_argument(
        "--long",
        type=float,
        default=20.0,
        help="seconds: after a run this long, a measurement is not repeated",
    )
    parser.add_argument(
        "--no-disk",
        action="store_true",
        help="skip the time-to-disk runs (curl -o, unzip, download)",
    )
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=None,
        help="results folder (default: benchmarks/results/<timestamp>)",
    )
    parser.add_argument("--list", action="store_true", help="list what can run, then exit")
    parser.add_argument(
        "--clean", action="store_true", help="remove the generated datasets when done"
    )
    parser.add_argument(
        "--clean-only", action="store_true", help="remove the generated datasets and exit"
    )
    args = parser.parse_args(argv)
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.stack is None:
        args.stack = "h11" if args.quick else "all"
    return args


def available_strategies() -> list[Strategy]:
    return [s for s in STRATEGIES if importable(s.needs)]


def print_list() -> None:
    print("strategies:")
    for strategy in STRATEGIES:
        state = "" if importable(strategy.needs) else "  (not importable: skipped)"
        print(f"  {strategy.name:<18} {strategy.label}{state}")
    print("datasets:")
    for name in ds.DATASETS:
        print(f"  {name:<18} {ds.FULL[name].description} (--quick: {ds.QUICK[name].description})")
    print("stacks:")
    for key, stack in STACKS.items():
        state = "" if stack.available() else "  (not installed: skipped)"
        print(f"  {key:<18} {stack.name}{state}")
    print(f"multiresp client: {'yes' if client_available() else 'not importable: skipped'}")


class Suite:
    """The runs of one invocation, saved after each dataset so a long run is never lost."""

    def __init__(self, args: argparse.Namespace, out: pathlib.Path) -> None:
        self.args = args
        self.out = out
        self.client = client_available()
        self.cells: list[dict[str, Any]] = []
        self.datasets: dict[str, dict[str, Any]] = {}
        self.scratch = ds.DATA_ROOT / "tmp"
        self.data = ds.DATA_ROOT / ("quick" if args.quick else "full")
        self.log = (out / "server.log").open("ab")
        self.disk_datasets = ("large",) if args.quick else ds.DATASETS
        self.scratch.mkdir(parents=True, exist_ok=True)
        measure.empty(self.scratch)  # what an interrupted run left behind

    def run_dataset(self, stack_key: str, dataset: ds.Dataset, strategies: list[Strategy]) -> None:
        stack = STACKS[stack_key]
        cells = {
            s.name: {"stack": stack.name, "dataset": dataset.name, "strategy": s.name,
                     "transfer": [], "disk": [], "error": None}
            for s in strategies
        }  # fmt: skip
        self.cells += cells.values()
        for kind in ("transfer", "disk"):
            if kind == "disk" and (self.args.no_disk or dataset.name not in self.disk_datasets):
                continue
            for run in range(self.args.repeat):
                for strategy in strategies:
                    cell = cells[strategy.name]
                    if cell["error"] or (run and self._long(cell[kind])):
                        continue
                    label = f"[{stack.name}] {dataset.name:<6} {kind:<8} {strategy.name:<18}"
                    try:
                        if kind == "transfer":
                            result = measure.transfer(
                                stack, strategy, dataset, self.data, self.scratch, self.log
                            )
                        else:
                            result = measure.to_disk(
                                stack, strategy, dataset, self.data, self.scratch, self.log,
                                client=self.client,
                            )  # fmt: skip
                    except Exception as exc:  # one broken strategy must not stop the suite
                        cell["error"] = f"{kind}: {exc}"
                        print(f"{label} run {run + 1}: ERROR {exc}", flush=True)
                        continue
                    cell[kind].append(result)
                    print(f"{label} run {run + 1}: {_brief(kind, result)}", flush=True)
        for cell in cells.values():
            cell["summary"] = report.summarize(cell, dataset.size)

    def _long(self, runs: list[dict[str, Any]]) -> bool:
        keys = ("total_s", "curl_unzip_s", "curl_s", "download_s")
        return any(run.get(key, 0) > self.args.long for run in runs for key in keys)

    def save(self, info: dict[str, Any], stacks: list[str]) -> dict[str, Any]:
        report.add_ratios(self.cells)
        results = {
            "machine": info,
            "options": {k: str(v) for k, v in vars(self.args).items()},
            "stacks": [STACKS[key].name for key in stacks],
            "datasets": self.datasets,
            "strategies": {
                s.name: {"label": s.label, "family": s.family, "format": s.format}
                for s in STRATEGIES
            },
            "cells": self.cells,
            "targets": report.check_targets(self.cells, [STACKS[key].name for key in stacks]),
        }
        (self.out / "results.json").write_text(json.dumps(results, indent=1))
        return results


def _brief(kind: str, result: dict[str, Any]) -> str:
    if kind == "transfer":
        return (
            f"TTFB {result['ttfb_s'] * 1000:7.1f} ms, total {result['total_s']:7.3f} s, "
            f"RSS +{result['rss_growth'] / report.MIB:7.1f} MiB"
        )
    parts = [f"{key} {result[key]:.3f}" for key in ("curl_s", "curl_unzip_s", "download_s")
             if key in result]  # fmt: skip
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.clean_only:
        shutil.rmtree(ds.DATA_ROOT, ignore_errors=True)
        print(f"removed {ds.DATA_ROOT}")
        return
    if args.list:
        print_list()
        return
    stacks = [key for key in _choose(args.stack, list(STACKS), "stack")
              if STACKS[key].available()]  # fmt: skip
    names = _choose(args.strategies, [s.name for s in available_strategies()], "strategy")
    strategies = [BY_NAME[name] for name in names]
    dataset_names = _choose(args.datasets, list(ds.DATASETS), "dataset")
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S") + ("-quick" if args.quick else "")
    out = args.out or RESULTS_ROOT / stamp
    out.mkdir(parents=True, exist_ok=True)

    info = machine_info()
    print("\n".join(machine_lines(info, stacks)), flush=True)
    missing = [n for n in REFERENCE_NAMES if n not in names]
    if missing:
        print(f"note: without {', '.join(missing)} some ratios stay empty", flush=True)
    if not client_available():
        print("note: multiresp.client.download is not importable: no download times")

    started = time.monotonic()
    suite = Suite(args, out)
    for name in dataset_names:
        dataset = ds.ensure(name, quick=args.quick)
        suite.datasets[name] = {"description": dataset.description, "files": dataset.files,
                                "size": dataset.size}  # fmt: skip
    for stack in stacks:
        for name in dataset_names:
            dataset = ds.ensure(name, quick=args.quick)
            ds.warm_page_cache(dataset)
            suite.run_dataset(stack, dataset, strategies)
            suite.save(info, stacks)
    results = suite.save(info, stacks)
    stack_names = [STACKS[key].name for key in stacks]
    table = report.markdown(suite.cells, suite.datasets, stack_names)
    targets = report.target_lines(results["targets"])
    plots = report.plot(suite.cells, stack_names, dataset_names, out)
    elapsed = time.monotonic() - started
    text = [
        f"# Benchmark run {stamp}",
        "",
        *[f"- {line}" for line in machine_lines(info, stacks)],
        f"- options: {' '.join(sys.argv[1:]) or '(defaults)'}; {args.repeat} run(s) per "
        f"measurement, median; {elapsed / 60:.1f} min",
        "",
        *table,
        "## Targets",
        "",
        "```",
        *targets,
        "```",
        "",
    ]
    (out / "results.md").write_text("\n".join(text))
    print("\n".join(table))
    print("\n".join(targets))
    print(f"\nresults: {out / 'results.json'}, {out / 'results.md'}")
    print(f"plots: {', '.join(str(p) for p in plots)}")
    print(f"{elapsed / 60:.1f} min")
    if args.clean:
        shutil.rmtree(ds.DATA_ROOT, ignore_errors=True)


if __name__ == "__main__":
    main()
