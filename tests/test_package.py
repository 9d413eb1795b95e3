"""The package as users get it: its dependencies, its import costs, its public names, its types.

Building the wheel and installing it into a fresh venv is in `.ci/check_dist.py` (CI runs it
before the tests: it needs the network for a fresh venv).
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

import multiresp

tomllib = pytest.importorskip("tomllib")  # Python 3.11+; CI runs 3.11

ROOT = pathlib.Path(__file__).parent.parent
SRC = pathlib.Path(multiresp.__file__).parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]

# Distributions a module may import only lazily (inside a function, or under
# `try: ... except ImportError`), from the extra that provides them.
OPTIONAL = {"isal": "fast", "tqdm": "cli", "uvicorn": "cli", "obstore": "s3"}


def _requirement_name(requirement: str) -> str:
    """``"uvicorn[standard]>=0.29"`` -> ``"uvicorn"`` (normalised as PEP 503 does)."""
    name = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert name is not None, requirement
    return re.sub(r"[-_.]+", "-", name.group()).lower()


def _extra(name: str, seen: frozenset[str] = frozenset()) -> set[str]:
    """The distributions an extra pulls, following ``multiresp[...]`` self-references."""
    names: set[str] = set()
    for requirement in PROJECT["optional-dependencies"][name]:
        if _requirement_name(requirement) == "multiresp":
            inner = re.search(r"\[(.*)\]", requirement)
            assert inner is not None, requirement
            for other in inner.group(1).split(","):
                if other.strip() not in seen:
                    names |= _extra(other.strip(), seen | {name})
                    names.add(f"multiresp[{other.strip()}]")
        else:
            names.add(_requirement_name(requirement))
    return names


def _distribution(module: str) -> str:
    """The distribution that provides a top-level import name (``zipstream`` -> zipstream-ng)."""
    providers = importlib.metadata.packages_distributions().get(module)
    return _requirement_name(providers[0] if providers else module)


class _Imports(ast.NodeVisitor):
    """Third-party top-level import names, split into eager and lazy ones."""

    def __init__(self) -> None:
        self.eager: set[str] = set()
        self.lazy: set[str] = set()
        self._depth = 0  # inside a function or an ``except ImportError`` guard

    def _add(self, name: str) -> None:
        top = name.split(".")[0]
        if top not in sys.stdlib_module_names and top != "__future__":
            (self.lazy if self._depth else self.eager).add(top)

    def _nested(self, node: ast.AST) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = _nested

    def visit_Try(self, node: ast.Try) -> None:
        guarded = any(
            isinstance(handler.type, ast.Name)
            and handler.type.id in {"ImportError", "ModuleNotFoundError"}
            for handler in node.handlers
        )
        if guarded:
            self._nested(node)
        else:
            self.generic_visit(node)

    def visit_If(self, node: ast.If) -> None:
        if "TYPE_CHECKING" in ast.unparse(node.test):
            return  # never imported at run time
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module and not node.level:
            self._add(node.module)

    def visit_Call(self, node: ast.Call) -> None:
        # importlib.import_module("isal.isal_zlib") imports as surely as a statement does
        if (
            ast.unparse(node.func).endswith("import_module")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            self._add(node.args[0].value)
        self.generic_visit(node)


def _imports(*folders: pathlib.Path) -> _Imports:
    found = _Imports()
    for folder in folders:
        for path in sorted(folder.rglob("*.py")):
            found.visit(ast.parse(path.read_text(), filename=str(path)))
    found.eager.discard("multiresp")
    found.lazy.discard("multiresp")
    return found


def test_runtime_dependencies_are_exactly_what_src_imports() -> None:
    imports = _imports(SRC)
    declared = {_requirement_name(r) for r in PROJECT["dependencies"]}
    eager = {_distribution(module) for module in imports.eager}
    assert eager == declared, (
        "[project].dependencies must list exactly the distributions src/ imports at load time"
    )
    for module in imports.lazy - imports.eager:
        assert module in OPTIONAL, f"{module} is imported lazily but belongs to no extra"
        extra = OPTIONAL[module]
        assert _distribution(module) in _extra(extra), f"{module} is missing from [{extra}]"


@pytest.mark.parametrize(
    ("folder", "extras"),
    [("tests", ("dev",)), ("benchmarks", ("bench", "fast", "cli")), ("examples", ("cli", "dev"))],
)
def test_tools_imports_are_in_their_extras(folder: str, extras: tuple[str, ...]) -> None:
    imports = _imports(ROOT / folder)
    local = {path.stem for path in (ROOT / folder).glob("*.py")} | {folder}
    local |= {path.parent.name for path in ROOT.glob("*/__init__.py")}  # the repo's own packages
    available = {_requirement_name(r) for r in PROJECT["dependencies"]}
    for extra in extras:
        available |= _extra(extra)
    needed = {_distribution(m) for m in (imports.eager | imports.lazy) - local}
    assert needed <= available, f"{folder}/ imports {needed - available}, declared in no extra"


def test_extras_for_users_pin_no_contributor_tools() -> None:
    everything = _extra("all")
    assert not {"multiresp[dev]", "multiresp[lint]", "multiresp[bench]"} & everything
    assert not {"ruff", "mypy", "pytest"} & everything
    for extra, requirements in PROJECT["optional-dependencies"].items():
        if extra not in {"lint", "dev"}:
            pinned = [r for r in requirements if "==" in r]
            assert not pinned, f"[{extra}] pins {pinned}: only contributors' extras pin"
    assert {"ruff", "mypy"} <= _extra("dev"), "the test suite runs the linters"


def test_license_file_matches_the_metadata() -> None:
    assert PROJECT["license"] == "MIT"
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n")
    assert "Copyright (c) 2026 multiresp developers" in text


def _run(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_client_does_not_load_the_server() -> None:
    loaded = _run(
        """
        import sys
        import multiresp.client
        from multiresp import Entry, Limits, MultirespError
        print(*sorted(m for m in sys.modules if m.split(".")[0] in {"starlette", "multiresp"}))
        """
    ).split()
    assert "multiresp.client" in loaded
    assert not [m for m in loaded if m.startswith("starlette")]
    assert "multiresp.responses" not in loaded
    assert "multiresp._pump" not in loaded
    assert "multiresp._filecrc" not in loaded  # its CRC thread pool is made at import


def test_the_server_names_load_on_first_use() -> None:
    out = _run(
        """
        import sys
        import multiresp
        assert "multiresp.responses" not in sys.modules
        from multiresp import ZipStreamResponse, negotiate
        from multiresp.responses import ZipStreamResponse as direct
        print(ZipStreamResponse is direct, "starlette" in sys.modules, negotiate.__module__)
        """
    )
    assert out.split() == ["True", "True", "multiresp.responses"]


def test_every_public_name_resolves() -> None:
    namespace: dict[str, object] = {}
    exec("from multiresp import *", namespace)
    assert set(multiresp.__all__) <= set(namespace)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = multiresp.nope  # type: ignore[attr-defined]


def test_dir_shows_the_public_names_and_no_import_helpers() -> None:
    names = dir(multiresp)
    assert set(multiresp.__all__) <= set(names)
    assert "__version__" in names
    leaked = [n for n in names if not n.startswith("__") and n not in multiresp.__all__]
    assert not leaked
    assert "annotations" not in names


@pytest.mark.parametrize("module", ["multiresp", "multiresp.responses", "multiresp.client"])
def test_modules_declare_their_public_names(module: str) -> None:
    loaded = importlib.import_module(module)
    assert isinstance(loaded.__all__, tuple)
    assert list(loaded.__all__) == sorted(set(loaded.__all__), key=list(loaded.__all__).index)
    for name in loaded.__all__:
        assert not name.startswith("_")
        assert getattr(loaded, name) is not None


# A user's settings file, type-checked as users do. The compression literal is public: a value
# annotated with it is accepted, and a `str` from the environment is narrowed before use.
USER_CODE_OK = """
import os
import typing

from multiresp import Compression, ZipStreamResponse

chosen: Compression = "auto"
first = ZipStreamResponse(["a.txt"], compression=chosen)


def is_compression(value: str) -> typing.TypeGuard[Compression]:
    return value in typing.get_args(Compression)


setting = os.environ.get("COMPRESSION", "store")
if not is_compression(setting):
    raise SystemExit(f"COMPRESSION must be one of {typing.get_args(Compression)}")
second = ZipStreamResponse(["a.txt"], compression=setting)
"""

# The same mistakes a user could make: mypy must see them (so the names are not `Any`).
USER_CODE_BAD = """
import os

from multiresp import ZipStreamResponse

setting = os.environ.get("COMPRESSION", "store")
first = ZipStreamResponse(["a.txt"], compression=setting)
second = ZipStreamResponse(["a.txt"], compression="zip")
"""


def test_mypy_strict_accepts_users_code_typed_with_the_public_literal(
    tmp_path: pathlib.Path,
) -> None:
    (tmp_path / "good.py").write_text(USER_CODE_OK)
    (tmp_path / "bad.py").write_text(USER_CODE_BAD)
    env = {**os.environ, "MYPYPATH": str(SRC.parent)}
    command = [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--config-file="]

    def mypy(name: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, name], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
        )

    good = mypy("good.py")
    assert good.returncode == 0, good.stdout + good.stderr
    bad = mypy("bad.py")
    errors = [line for line in bad.stdout.splitlines() if ": error:" in line]
    assert [line.split(":")[1] for line in errors] == ["7", "8"], bad.stdout
    assert all("[arg-type]" in line for line in errors)


def test_readme_links_resolve_on_the_package_index() -> None:
    """The README is the long description on PyPI, where links relative to the repo break: the
    build turns them into plain text (pyproject's fancy-pypi-readme substitutions), and every
    relative link must still lead to a file of the repository."""
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)\s]+)", readme) + re.findall(r"<img[^>]+src=\"([^\"]+)", readme)
    relative = [t for t in targets if not t.startswith(("https://", "http://", "#", "mailto:"))]
    assert all((ROOT / target).is_file() for target in relative), relative
    for substitution in PYPROJECT["tool"]["hatch"]["metadata"]["hooks"]["fancy-pypi-readme"][
        "substitutions"
    ]:
        readme = re.sub(substitution["pattern"], substitution["replacement"], readme)
    targets = re.findall(r"\]\(([^)\s]+)", readme) + re.findall(r"<img[^>]+src=\"([^\"]+)", readme)
    relative = [t for t in targets if not t.startswith(("https://", "http://", "#", "mailto:"))]
    assert not relative, f"links that resolve only inside the repository: {relative}"


def test_the_documents_the_code_cites_are_in_the_repository() -> None:
    """A comment that cites a Markdown file (and a section of it) must lead somewhere."""
    cited = 0
    for folder in ("src", "tests", "examples"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            text = path.read_text()
            for document in re.findall(r"(?<![\w/.-])([\w./-]+\.md)\b", text):
                cited += 1
                assert (ROOT / document).is_file(), f"{path.name} cites {document}: not in the repo"
            for document, section in re.findall(r"(docs/[\w./-]+\.md), \"([^\"]+)\"", text):
                headings = re.findall(r"^#+ (.+)$", (ROOT / document).read_text(), re.MULTILINE)
                assert section in headings, (
                    f"{path.name} cites {document}, {section!r}: no such section"
                )
    assert cited
