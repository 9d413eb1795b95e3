"""Check the package as users get it: build it, check its metadata, install it, use it.

1. ``python -m build``: the sdist, then the wheel built from that sdist (so a file missing from
   the sdist breaks the wheel here, not on a user's machine);
2. ``twine check --strict``: the metadata and the README render as the package index shows them,
   with the README's links into the repository turned into plain text (no broken links there);
3. the wheel installed into a fresh venv (its dependencies from the package index, no extras):
   the license and ``py.typed`` are in it, every public module imports on its own, and every
   console script of ``[project.scripts]`` runs ``--help``.

``--expect-broken-script NAME`` names a console script whose module has not landed yet: the
check then requires that it still fails, so that the flag is dropped the day it works.

Run from CI (``.ci/run``) with a Python that has ``build`` and ``twine`` (the ``dev`` extra).
"""

from __future__ import annotations

import argparse
import pathlib
import re
import subprocess
import sys
import tempfile
import venv
import zipfile

import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def run(*command: str | pathlib.Path, cwd: pathlib.Path | None = None) -> None:
    print("+", *command, flush=True)
    subprocess.run([str(part) for part in command], cwd=cwd, check=True)


def public_modules(wheel: pathlib.Path) -> list[str]:
    """``multiresp``, ``multiresp.client``, …: every module of the wheel not named ``_x``."""
    modules = []
    for name in zipfile.ZipFile(wheel).namelist():
        path = pathlib.PurePosixPath(name)
        if path.suffix == ".py" and ".dist-info" not in name:
            parts = path.with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if not any(part.startswith("_") for part in parts):
                modules.append(".".join(parts))
    return sorted(modules)


def check_wheel_files(wheel: pathlib.Path, package: str) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert f"{package}/py.typed" in names, "py.typed is missing: users' type checkers see Any"
    licenses = [n for n in names if ".dist-info/" in n and n.rsplit("/", 1)[-1] == "LICENSE"]
    assert licenses, "the wheel carries no LICENSE"
    (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    description = zipfile.ZipFile(wheel).read(metadata).decode().partition("\n\n")[2]
    assert "## Quick start" in description, "the long description is not the README"
    targets = re.findall(r"\]\(([^)\s]+)", description)
    relative = [t for t in targets if not t.startswith(("https://", "http://", "#", "mailto:"))]
    assert not relative, f"the package index page would carry broken links: {relative}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--expect-broken-script", action="append", default=[], metavar="NAME")
    args = parser.parse_args()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    scripts = sorted(project.get("scripts", {}))
    unknown = set(args.expect_broken_script) - set(scripts)
    if unknown:
        parser.error(f"no such console script: {sorted(unknown)}")

    with tempfile.TemporaryDirectory(prefix="multiresp-dist-") as tmp:
        work = pathlib.Path(tmp)
        dist = work / "dist"
        run(sys.executable, "-m", "build", "--outdir", dist, ROOT)
        run(sys.executable, "-m", "twine", "check", "--strict", *sorted(dist.iterdir()))
        (wheel,) = dist.glob("*.whl")
        check_wheel_files(wheel, project["name"].replace("-", "_"))

        env = work / "venv"
        venv.create(env, with_pip=True)
        python = env / "bin" / "python"
        # pip from outside the project's folder, so that nothing resolves to the source tree
        run(python, "-m", "pip", "install", "-q", "--disable-pip-version-check", wheel, cwd=work)
        for module in public_modules(wheel):
            run(python, "-c", f"import {module}", cwd=work)
        failures = []
        for script in scripts:
            print("+", env / "bin" / script, "--help", flush=True)
            result = subprocess.run(
                [env / "bin" / script, "--help"], cwd=work, capture_output=True, text=True
            )
            works = result.returncode == 0
            if script in args.expect_broken_script:
                if works:
                    failures.append(f"{script} --help works now: drop --expect-broken-script")
                else:
                    print(f"  fails as expected: {result.stderr.strip().splitlines()[-1:]}")
            elif not works:
                failures.append(f"{script} --help exited {result.returncode}:\n{result.stderr}")
        for failure in failures:
            print("FAILED:", failure, file=sys.stderr)
        if failures:
            return 1
    print("the package builds, installs and imports as users get it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
