"""cnnlab's C++ kernels (``csrc/*.cpp``): built on first use, cached, loaded as torch ops.

The fast engine's blocks (every kind :mod:`cnnlab.engine.plan` lists, and the loss), its
Adam update and the speedrun's first block run through them on a CPU when they build; when
they cannot (no C++ compiler, say), the same arithmetic runs in PyTorch operations, about
2.5x slower, after one warning. ``make install`` builds them ahead (``python -m
cnnlab.engine.native``), so no training run waits for the compiler (about 38 s on two quiet
cores: each source compiled by its own g++ process, as many at once as there are cores,
then one link; one g++ process for every source took 69-73 s).

The library is compiled with ``g++`` (or ``$CXX``) against the installed torch's headers
and libraries, for this machine's CPU (``-march=native``), into
``~/.cache/cnnlab/native/<key>/`` (``$XDG_CACHE_HOME`` is honoured). The key hashes the
sources, the torch version, the compiler flags and the CPU, so a changed source or a new
torch gets a fresh build; the library is written to a temporary name and renamed, so an
interrupted build never leaves a half-written one behind.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Sequence
from functools import cache, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

import torch

if TYPE_CHECKING:
    from cnnlab.engine.plan import Call

CSRC = Path(__file__).with_name("csrc")
_NAMES = ("common", "blocks", "layers", "norm", "program", "net", "speedrun")
SOURCES = tuple(CSRC / f"{name}.cpp" for name in _NAMES)
# (and the headers they share: blocks.h, layers.h, program.h, f32x16.h)
# Warnings on for cnnlab's sources (torch's headers come in as -isystem, whose warnings are
# not ours). Not -Werror here: another compiler's new warning must not cost a user the fast
# engine; tests/engine/test_native.py compiles every source with -Werror instead.
WARNINGS = ("-Wall", "-Wextra", "-Wshadow", "-Wconversion")
# No -ffast-math: IEEE float32 results. -fno-math-errno only lets sqrt vectorise.
FLAGS = [
    "-O3",
    "-march=native",
    "-std=c++20",
    "-shared",
    "-fPIC",
    "-fopenmp",
    "-fno-math-errno",
    *WARNINGS,
]


class NativeBuildError(RuntimeError):
    """The kernels could not be compiled or loaded here."""


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _compiler() -> str:
    return os.environ.get("CXX", "g++")


def _compile_flags() -> list[str]:
    import torch.utils.cpp_extension as cpp  # slow to import; only needed to build

    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    includes = [f"-isystem{p}" for p in cpp.include_paths()]
    return [*FLAGS, f"-D_GLIBCXX_USE_CXX11_ABI={abi}", *includes]


def _link_flags() -> list[str]:
    lib = Path(torch.__file__).parent / "lib"
    return [f"-L{lib}", "-lc10", "-ltorch_cpu", f"-Wl,-rpath,{lib}"]


def _jobs() -> int:
    """Compilers run at once: one per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _run_all(commands: Sequence[list[str]], jobs: int) -> list[subprocess.CompletedProcess[str]]:
    """Run ``commands``, ``jobs`` at a time; each one's result, in order."""
    done: list[subprocess.CompletedProcess[str] | None] = [None] * len(commands)
    running: list[tuple[int, subprocess.Popen[str]]] = []
    todo = list(enumerate(commands))
    while todo or running:
        while todo and len(running) < jobs:
            i, cmd = todo.pop(0)
            pipe = subprocess.PIPE
            running.append((i, subprocess.Popen(cmd, stdout=pipe, stderr=pipe, text=True)))
        i, proc = running.pop(0)
        out, err = proc.communicate()
        done[i] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return [d for d in done if d is not None]


def warnings_command(source: Path) -> list[str]:
    """The command that compiles one source as the build does, without output, and fails on
    any warning (the tests' check that cnnlab's own code compiles cleanly)."""
    return [_compiler(), *_compile_flags(), "-fsyntax-only", "-Werror", str(source)]


def library_path() -> Path:
    """Where this machine's build of the kernels lives (whether or not it exists yet)."""
    key = hashlib.sha256()
    for path in sorted(CSRC.iterdir()):
        key.update(path.name.encode() + path.read_bytes())
    key.update(torch.__version__.encode() + " ".join(FLAGS).encode())
    key.update(f"{_cpu_name()} {platform.machine()} {sys.version_info[:2]}".encode())
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "cnnlab" / "native" / key.hexdigest()[:16] / "cnnlab_kernels.so"


def build(target: Path, sources: Sequence[Path] = SOURCES, extra: Sequence[str] = ()) -> None:
    """Compile ``sources`` (the kernels) into ``target``, atomically; raises NativeBuildError.

    ``extra``: more compiler flags (the tests' ``-DCNNLAB_MUTANTS`` build).
    """
    if platform.system() != "Linux":
        raise NativeBuildError(f"the C++ kernels are built on Linux only, not {platform.system()}")
    compiler = _compiler()
    if shutil.which(compiler) is None:
        raise NativeBuildError(f"no C++ compiler ({compiler}) on PATH")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with tempfile.TemporaryDirectory(dir=target.parent) as objects:
            # each source compiled on its own core (torch's headers make every one slow),
            # then one link
            objs = [Path(objects) / f"{i}_{src.stem}.o" for i, src in enumerate(sources)]
            flags = [*_compile_flags(), *extra]
            compiles = [[compiler, *flags, "-c", str(src), "-o", str(obj)]
                        for src, obj in zip(sources, objs, strict=True)]  # fmt: skip
            link = [[compiler, *flags, *map(str, objs), *_link_flags(), "-o", str(tmp)]]
            for step in (compiles, link):
                for done in _run_all(step, _jobs()):
                    if done.returncode != 0:
                        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
                        raise NativeBuildError(f"{compiler} failed: {last}")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _build_and_load() -> Path:
    """Build the kernels if this machine has no build yet, load them; returns the library.

    ``$CNNLAB_NATIVE_LIB`` names another build to load instead (the tests' mutants).
    """
    override = os.environ.get("CNNLAB_NATIVE_LIB")
    target = Path(override) if override else library_path()
    if not target.exists():
        build(target)
    torch.ops.load_library(str(target))
    return target


def _unavailable(err: Exception) -> str:
    # (a library that exists but fails to load is left for the user to delete: loading
    # a rebuilt copy into this process would register the same ops twice)
    try:
        target = library_path()
    except OSError:
        return str(err)
    return f"{err}; delete {target.parent} to rebuild" if target.exists() else str(err)


@cache
def load() -> bool:
    """Build (if needed) and load the kernels; True when ``torch.ops.cnnlab`` has them.

    Warns once and returns False when they cannot be built or loaded here.
    """
    try:
        _build_and_load()
    except (NativeBuildError, OSError, RuntimeError) as err:
        warnings.warn(
            f"cnnlab's C++ kernels are not available ({_unavailable(err)}); "
            "the fast engine runs its PyTorch version instead",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    return True


class Program(Protocol):
    """``torch.classes.cnnlab.Program`` (``csrc/program.h``; its step in ``csrc/net.cpp``)."""

    def gradients(
        self, x: torch.Tensor, y: torch.Tensor, weights: list[torch.Tensor],
        grads: list[torch.Tensor], masks: list[torch.Tensor], state: list[torch.Tensor],
        denom: int,
    ) -> tuple[torch.Tensor, torch.Tensor]: ...  # fmt: skip

    def logits(
        self, x: torch.Tensor, weights: list[torch.Tensor], state: list[torch.Tensor]
    ) -> torch.Tensor: ...

    def kinds(self) -> list[str]: ...


@lru_cache(maxsize=64)  # evaluation asks for the same plan's program batch after batch
def program(calls: tuple[Call, ...]) -> Program:
    """The kernels' ``Program`` (``csrc/program.h``) of a plan's calls: one method call per
    block, by the kind's name with its named arguments (torch checks names and types).
    Not to be changed after (it may be shared). It runs as ``program.gradients(x, y,
    weights, grads, masks, state, denom)`` and ``program.logits(x, weights, state)``."""
    out = torch.classes.cnnlab.Program()
    for c in calls:
        getattr(out, c.kind)(**dict(c.args))
    return cast(Program, out)


@cache
def exact_dropout() -> bool:
    """Whether the kernels' dropout masks are PyTorch's, bit for bit, with this torch here.

    They replay the generator calls of PyTorch's CPU ``bernoulli_``; checked once, on a
    forked generator, in case a build of torch draws another way (then PyTorch draws them).
    """
    if not load():
        return False
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(20260)
        expected = torch.nn.functional.dropout(torch.ones(3, 700), 0.25, training=True)
        torch.manual_seed(20260)
        got = torch.ops.cnnlab.dropout_mask([3, 700], 0.75)
    return torch.equal(got, expected)


def main() -> int:
    """``python -m cnnlab.engine.native``: build the kernels now and say where they are."""
    try:
        target = _build_and_load()
    except (NativeBuildError, OSError, RuntimeError) as err:
        print(
            f"cnnlab: C++ kernels not built ({_unavailable(err)}); the fast engine will use "
            "PyTorch ops"
        )
        return 0  # not an error: the fast engine works without them
    print(f"cnnlab: C++ kernels ready: {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
