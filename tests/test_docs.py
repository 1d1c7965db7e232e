"""The docs as a newcomer reads them: every documented command, example and path holds.

Shell blocks (```sh, ```bash, ```console) and inline code of README.md and docs/*.md:
each ``cnnlab ...`` parses with cnnlab's own argparse parser (parsing opens no file, so
placeholder paths pass; a flag or sub-command that does not exist fails), each ``make X``
names a Makefile target, each ``python benchmarks/X.py ...`` names a script whose parser
takes its flags. A handful of commands run for real, and the README's ``cnnlab.ops``
example runs with its commented results checked (the docs' paths, names and figures:
test_docs_facts.py). A failure names the file and line of the stale text.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib.util
import io
import re
import runpy
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pytest

from cnnlab.cli.main import build_parser, main

REPO = Path(__file__).resolve().parents[1]
DOCS = (REPO / "README.md", *sorted((REPO / "docs").glob("*.md")))
SHELL = {"sh", "bash", "console", "shell"}
INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")


@dataclass(frozen=True)
class Snippet:
    """A piece of a doc: its text and where it is."""

    path: Path
    line: int
    text: str

    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}: `{self.text}`"


def fenced(path: Path) -> Iterator[tuple[str, list[Snippet]]]:
    """Each fenced block of ``path``: its language and its lines."""
    lang: str | None = None
    body: list[Snippet] = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fence = raw.strip()
        if fence.startswith("```"):
            if lang is None:
                lang, body = fence[3:].strip() or "text", []
            else:
                yield lang, body
                lang = None
        elif lang is not None:
            body.append(Snippet(path, number, raw))


def shell_lines(path: Path) -> Iterator[Snippet]:
    """The command lines of the shell blocks (continuations joined, a console's ``$`` lines)."""
    for lang, body in fenced(path):
        if lang not in SHELL:
            continue
        pending: Snippet | None = None
        for snip in body:
            text = snip.text.strip()
            if pending is not None:
                text, snip = pending.text + " " + text, pending
            elif lang == "console":
                if not text.startswith("$ "):
                    continue  # the command's output
                text = text[2:]
            if text.endswith("\\"):
                pending = Snippet(snip.path, snip.line, text[:-1].strip())
                continue
            pending = None
            if text and not text.startswith("#"):
                yield Snippet(snip.path, snip.line, text)


def inline_code(path: Path) -> Iterator[Snippet]:
    """Inline code spans outside fenced blocks."""
    in_fence = False
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if raw.strip().startswith("```"):
            in_fence = not in_fence
        elif not in_fence:
            for m in INLINE.finditer(raw):
                yield Snippet(path, number, m.group(1))


def commands(*, inline: bool = True) -> list[Snippet]:
    """Every documented command: shell lines, and inline spans that are commands."""
    found: list[Snippet] = []
    for path in DOCS:
        found += shell_lines(path)
        found += [
            s
            for s in (inline_code(path) if inline else ())
            if re.match(r"(cnnlab|make)( |$)|(python )?benchmarks/\w+\.py( |$)", s.text)
        ]
    return found


def placeholder_only(problem: str, inline: bool) -> bool:
    """Whether a parse error is only the docs' shorthand: a placeholder value (``--seed N``)
    or, in running text, a command named without its arguments (`cnnlab serve`)."""
    if re.search(r"got '[A-Z][A-Z_]*'", problem):
        return True
    return inline and bool(re.search(r"arguments are required|arguments .* is required", problem))


def words(snip: Snippet) -> list[list[str]]:
    """The simple commands of a line, with the docs' placeholders made concrete.

    ``[--flag X]`` is an optional part (taken), ``...`` a repetition (dropped); a leading
    ``VAR=value``, ``nice -n N`` and ``export`` are the shell's, not the command's.
    """
    try:
        tokens = shlex.split(snip.text, comments=True)
    except ValueError as exc:
        pytest.fail(f"{snip.where()}: not a shell line ({exc})")
    parts: list[list[str]] = [[]]
    for token in tokens:
        if token in {"|", "&&", ";", "||"}:
            parts.append([])
            continue
        token = token.replace("[", "").replace("]", "")
        if token and token not in {"...", "…"}:
            parts[-1].append(token)
    out = []
    for part in parts:
        while part and re.fullmatch(r"[A-Z_]+=\S*", part[0]):
            part = part[1:]
        if part[:2] == ["nice", "-n"]:
            part = part[3:]
        if part and part[0] != "export":
            out.append(part)
    return out


def cnnlab_argv(argv: list[str]) -> list[str] | None:
    """The arguments given to cnnlab, when ``argv`` runs it (directly, as a module, torchrun)."""
    if argv and Path(argv[0]).name == "cnnlab":
        return argv[1:]
    if "-m" in argv and argv.index("-m") + 1 < len(argv):
        at = argv.index("-m")
        if argv[at + 1] in {"cnnlab", "cnnlab.cli"}:
            return argv[at + 2 :]
    return None


def parse_error(parser: argparse.ArgumentParser, argv: list[str], parse: Any = None) -> str | None:
    """What ``parser`` says against ``argv``, or None when it parses (nothing is run)."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            (parse or type(parser).parse_args)(parser, argv)
    except SystemExit as exc:
        if exc.code not in (0, None):
            return err.getvalue().strip().splitlines()[-1] if err.getvalue() else str(exc)
    return None


class _Parsed(BaseException):
    """Raised by the stand-in ``parse_args`` to stop a benchmark before it runs."""


def benchmark_parse_error(script: Path, argv: list[str], monkeypatch: Any) -> str | None:
    """Parse ``argv`` with the parser ``script``'s ``main()`` builds, and run nothing."""
    real = argparse.ArgumentParser.parse_args
    seen: list[str | None] = []

    def parse_only(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> NoReturn:
        seen.append(parse_error(self, argv, real))
        raise _Parsed

    monkeypatch.syspath_prepend(str(script.parent))  # the scripts import each other
    spec = importlib.util.spec_from_file_location(f"_doc_{script.stem}", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_only)
    try:
        module.main()
    except _Parsed:
        pass
    finally:
        monkeypatch.setattr(argparse.ArgumentParser, "parse_args", real)
    assert seen, f"{script.name}'s main() never parsed its arguments"
    return seen[0]


def make_targets() -> set[str]:
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, flags=re.M))


def test_documented_commands_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    parser, targets = build_parser(), make_targets()
    failures, counted = [], 0
    blocks = set(commands(inline=False))
    for snip in commands():
        for argv in words(snip):
            counted += 1
            problem = None
            if (args := cnnlab_argv(argv)) is not None:
                problem = parse_error(parser, args)
            elif argv[0] == "make":
                wanted = [a for a in argv[1:] if "=" not in a and not a.startswith("-")]
                problem = ", ".join(f"no Makefile target {t}" for t in wanted if t not in targets)
            elif argv[0] == "python" and "-m" in argv:
                module = argv[argv.index("-m") + 1]
                if importlib.util.find_spec(module) is None:
                    problem = f"no module {module}"
            elif (run := argv[1:] if argv[0] == "python" else argv) and run[0].startswith(
                "benchmarks/"
            ):
                script = REPO / run[0]
                if not script.is_file():
                    problem = f"no file {run[0]}"
                else:
                    problem = benchmark_parse_error(script, run[1:], monkeypatch)
            if problem and not placeholder_only(problem, snip not in blocks):
                failures.append(f"{snip.where()}: {problem}")
    assert counted > 50, "the docs' commands were not found: has the extraction broken?"
    assert not failures, "stale commands in the docs:\n" + "\n".join(failures)


def test_a_wrong_flag_or_command_is_caught() -> None:
    """The check itself can fail: a flag or a sub-command that does not exist."""
    parser = build_parser()
    assert parse_error(parser, ["summary", "--case", "1"]) is None
    assert "--no-such-flag" in (parse_error(parser, ["train", "--no-such-flag"]) or "")
    assert parse_error(parser, ["no-such-command"]) is not None
    snip = Snippet(REPO / "README.md", 1, "X=1 nice -n 5 cnnlab report RUN [RUN ...] | head")
    assert words(snip) == [["cnnlab", "report", "RUN", "RUN"], ["head"]]


# Documented commands run for real, on small settings; each must still be in the docs,
# and what it prints must bear out the numbers the README gives for it.
RUNS = {
    "cnnlab summary --case 1": ["61,002"],
    "cnnlab receptive --case 1": ["8,490,560", "20,947,520"],
    'cnnlab summary --model "Input(28,28,1) Conv2D(8,3,relu) MaxPooling2D Flatten '
    'Dense(10,softmax)"': ["Conv2D", "Dense"],
}


@pytest.mark.parametrize("line", sorted(RUNS))
def test_documented_commands_run(line: str, capsys: pytest.CaptureFixture[str]) -> None:
    documented = [" ".join(shlex.split(s.text, comments=True)) for s in commands()]
    assert " ".join(shlex.split(line)) in documented, f"no longer documented: {line}"
    assert main(shlex.split(line)[1:]) == 0
    out = capsys.readouterr().out
    for expected in RUNS[line]:
        assert expected in out, f"`{line}` does not print {expected}"


def test_data_verify_runs(mnist_data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "cnnlab data verify" in [s.text.split("#")[0].strip() for s in commands()]
    assert main(["data", "verify", "--data-dir", str(mnist_data_dir)]) == 0
    out = capsys.readouterr().out
    assert out.count(str(mnist_data_dir)) == 4 and "missing" not in out


def python_blocks(path: Path) -> list[list[Snippet]]:
    """The self-contained Python blocks: those that import what they use."""
    return [
        body
        for lang, body in fenced(path)
        if lang == "python" and any(s.text.startswith(("import ", "from ")) for s in body)
    ]


def expected_value(comment: str) -> Any:
    """The literal a comment opens with (``# (8, 13, 13, 16) feature maps``), or None."""
    text = comment.strip()
    for end in range(len(text), 0, -1):
        if text[end - 1] in ")]0123456789":
            try:
                return ast.literal_eval(text[:end])
            except (ValueError, SyntaxError):
                continue
    return None


def checked_source(body: list[Snippet]) -> tuple[str, dict[int, Any]]:
    """The block's source with each result a comment states recorded, and those results.

    ``expr  # R`` and ``name = expr  # R``: the value (or its shape, where R is a shape)
    goes into ``_doc_results`` under the line's number.
    """
    source = "\n".join(s.text for s in body)
    tree = ast.parse(source)
    expected: dict[int, Any] = {}
    statements: list[ast.stmt] = []
    for stmt in tree.body:
        statements.append(stmt)
        line = source.splitlines()[stmt.lineno - 1]
        value = expected_value(line.split("#", 1)[1]) if "#" in line else None
        if value is None:
            continue
        if isinstance(stmt, ast.Expr):
            got: ast.expr = stmt.value
            statements.pop()
        elif isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name):
            got = ast.Name(stmt.targets[0].id, ast.Load())
        else:
            continue
        record = f"_doc_results[{body[stmt.lineno - 1].line}] = None"
        call = ast.parse(record).body[0]
        assert isinstance(call, ast.Assign)
        call.value = got
        statements.append(call)
        expected[body[stmt.lineno - 1].line] = value
    module = ast.Module(body=statements, type_ignores=[])
    return "_doc_results = {}\n" + ast.unparse(ast.fix_missing_locations(module)), expected


def same(got: Any, want: Any) -> bool:
    if isinstance(got, np.ndarray) and isinstance(want, tuple):
        return got.shape == want
    if isinstance(got, np.ndarray):
        return got.shape == np.shape(want) and np.allclose(got, want)
    return bool(got == want)


def test_readme_python_examples_run(tmp_path: Path) -> None:
    blocks = python_blocks(REPO / "README.md")
    assert blocks, "the README's cnnlab.ops example is gone"
    checked = 0
    for body in blocks:
        source, expected = checked_source(body)
        script = tmp_path / f"readme_{body[0].line}.py"
        script.write_text(source, encoding="utf-8")
        results = runpy.run_path(str(script))["_doc_results"]
        for line, want in expected.items():
            got = results[line]
            text = REPO.joinpath("README.md").read_text().splitlines()[line - 1].strip()
            assert same(got, want), f"README.md:{line}: `{text}` gives {got!r}"
        checked += len(expected)
    assert checked >= 5, "the ops example's commented results were not found"


def test_the_example_check_can_fail(tmp_path: Path) -> None:
    body = [
        Snippet(REPO / "README.md", 7, "import numpy as np"),
        Snippet(REPO / "README.md", 8, "np.ones(2)  # [1, 2]: a wrong comment"),
    ]
    source, expected = checked_source(body)
    assert expected == {8: [1, 2]}
    (tmp_path / "block.py").write_text(source, encoding="utf-8")
    got = runpy.run_path(str(tmp_path / "block.py"))["_doc_results"][8]
    assert not same(got, expected[8]) and same(got, [1, 1])
