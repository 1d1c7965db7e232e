"""The docs' facts: paths, Python names, local pages and the figures stated in several places.

Every backticked path under src/, tests/, docs/ or benchmarks/ and every relative link in
README.md and docs/*.md exists, every ``cnnlab.…`` name resolves, no example uses a path
of the machine it was written on, every local URL is a route cnnlab serves, the block
kinds are listed where the engine's docstrings point, and the kernels' build time is one
figure. A failure names the file and line of the stale text.
"""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DOCS = (REPO / "README.md", *sorted((REPO / "docs").glob("*.md")))
INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
PATH_PREFIXES = ("src/", "tests/", "docs/", "benchmarks/")
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")


def inline_code() -> Iterator[tuple[Path, int, str]]:
    """Each inline code span outside fenced blocks: its file, line and text."""
    for path in DOCS:
        in_fence = False
        for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if raw.strip().startswith("```"):
                in_fence = not in_fence
            elif not in_fence:
                for m in INLINE.finditer(raw):
                    yield path, number, m.group(1)


def doc_paths() -> Iterator[tuple[str, Path]]:
    """Backticked repository paths and relative links: where each is, and the file it names."""
    for path, number, code in inline_code():
        text = re.sub(r"(:\d+)?[.,;:]?$", "", code.split()[0]) if code.strip() else ""
        if text.startswith(PATH_PREFIXES) and not re.search(r"[<>{}$]|NAME|\.\.\.", text):
            yield f"{path.relative_to(REPO)}:{number}: `{code}`", REPO / text
    for path in DOCS:
        for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for m in LINK.finditer(raw):
                if not re.match(r"[a-z]+:", m.group(1)):
                    yield (
                        f"{path.relative_to(REPO)}:{number}: ({m.group(1)})",
                        path.parent / m.group(1),
                    )


def test_documented_paths_exist() -> None:
    failures, counted = [], 0
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    for where, target in doc_paths():
        counted += 1
        if str(target.relative_to(REPO)) in makefile:
            continue  # made by make (benchmarks/.venv-keras)
        found = any(target.parent.glob(target.name)) if "*" in target.name else target.exists()
        if not found:
            failures.append(f"{where}: no such file or folder")
    assert counted > 30
    assert not failures, "paths in the docs that do not exist:\n" + "\n".join(failures)


def resolves(name: str) -> bool:
    """Whether a dotted ``cnnlab.…`` name is a module, or an attribute of one."""
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:k]))
        except ImportError:
            continue
        for attr in parts[k:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_documented_python_names_exist() -> None:
    failures = [
        f"{path.relative_to(REPO)}:{number}: `{code}`: no such module or attribute"
        for path, number, code in inline_code()
        if (m := re.match(r"(cnnlab(?:\.\w+)+)", code)) and not resolves(m.group(1))
    ]
    assert resolves("cnnlab.ops.conv") and not resolves("cnnlab.serving.inputs")
    assert not failures, "stale names in the docs:\n" + "\n".join(failures)


def test_no_paths_of_the_machine_they_were_written_on() -> None:
    """Examples use placeholders (``/path/to/data``), not a folder that exists only here."""
    local = re.compile(r"(?<![\w.])(/work/|/root/|/tmp/|/Users/|/home/(?!me/))")
    failures = [
        f"{path.relative_to(REPO)}:{number}: {raw.strip()}"
        for path in DOCS
        for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if local.search(raw) or str(REPO.parent) in raw
    ]
    assert not failures, "machine-specific paths in the docs:\n" + "\n".join(failures)


def test_the_block_kinds_are_listed_where_the_docs_point() -> None:
    """fastpath.py and native.py point to plan.py for the block kinds, not a copy of them:
    plan.py's docstring names every kind that its code and kinds.py's make, and each kind
    with a kernel is declared once in C++: a struct of csrc/program.h (its ``kName``) and
    the Program method of that name in csrc/program.cpp, which their ``call`` names."""
    from cnnlab.engine import kinds, plan

    source = "\n".join(
        Path(m.__file__).read_text(encoding="utf-8") for m in (plan, kinds) if m.__file__
    )

    def first_strings(function: str) -> set[str]:
        return {
            c.value
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == function
            for c in ast.walk(node.args[0])
            if isinstance(c, ast.Constant) and isinstance(c.value, str)
        }

    made, called = first_strings("Block"), first_strings("call")
    assert {k for k in made if f"``{k}``" not in (plan.__doc__ or "")} == set()
    csrc = Path(plan.__file__).parent / "csrc"
    header = (csrc / "program.h").read_text(encoding="utf-8")
    name = r"struct (\w+) \{\n  static constexpr const char\* kName = \"(\w+)\";"
    declared = re.findall(name, header)
    methods = re.findall(  # a method each, or a slot kind's method made by one template
        r"(?:\.def\(|def_slot_kind<)block::(\w+)(?:::kName|>\(program\))",
        (csrc / "program.cpp").read_text("utf-8"),
    )
    variant = re.search(r"using Block = std::variant<(.*?)>;", header, flags=re.S)
    assert variant is not None
    alternatives = re.findall(r"block::(\w+)", variant.group(1))
    structs = [struct for struct, _ in declared]
    assert sorted(structs) == sorted(methods) == sorted(alternatives), (structs, methods)
    names = {name for _, name in declared}
    # every block kind is a C++ kind; store and load are calls inside a graph's blocks
    assert len(declared) >= 15 and names == called and names - made == {"store", "load"}, made


def test_one_figure_for_the_kernel_build() -> None:
    """The C++ kernels' build time is stated in three places; they give the same figure."""
    from cnnlab.engine import native

    sources = {
        "Makefile": (REPO / "Makefile").read_text(encoding="utf-8"),
        "README.md": (REPO / "README.md").read_text(encoding="utf-8"),
        "native.py": native.__doc__ or "",
    }
    pattern = r"(?:C\+\+ kernels now \(~|`make install` \(about |the compiler \(about )(\d+) s"
    figures = {name: re.findall(pattern, text) for name, text in sources.items()}
    assert all(len(found) == 1 for found in figures.values()), figures
    assert len({found[0] for found in figures.values()}) == 1, figures


def test_documented_pages_are_served() -> None:
    """Every local URL the docs give (http://127.0.0.1:8000/...) is a route of cnnlab's apps:
    FastAPI's own /docs page, say, is switched off and must not be promised."""
    serving = REPO / "src" / "cnnlab" / "serving"
    source = "\n".join(p.read_text(encoding="utf-8") for p in serving.glob("*.py"))
    routes = set(re.findall(r'@(?:app|router)\.(?:get|post)\(\s*"([^"]+)"', source))
    routes.add("/openapi.json")  # FastAPI's schema, left on (docs_url=None, redoc_url=None)
    assert {"/", "/mechanism", "/api/predict"} <= routes
    assert "docs_url=None" in source
    failures = [
        f"{path.relative_to(REPO)}:{number}: {m.group(0)}: not served"
        for path in DOCS
        for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        for m in re.finditer(r"https?://(?:127\.0\.0\.1|localhost):\d+(/[\w./-]*)", raw)
        if m.group(1) not in routes
    ]
    assert not failures, "pages the docs promise that cnnlab does not serve:\n" + "\n".join(
        failures
    )
