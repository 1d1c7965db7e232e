"""Optional features need their extra, say so in one line; the core imports none of them.

The CLI cases run in subprocesses. With ``hide``, every finder on ``sys.meta_path`` is
wrapped so that the optional packages are not found, exactly as when they are not
installed (torch's own ``importlib.util.find_spec`` probes then see None, as they would;
a finder that raised instead would break them). With ``watch``, everything installed
stays importable and the run records which optional modules ended up imported, which
catches a soft ``try: import pandas`` that hiding alone would not.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from cnnlab.errors import CnnlabError
from cnnlab.extras import EXTRAS, MissingExtra, extra, require

REPO = Path(__file__).resolve().parents[2]
FEATURE_EXTRAS = ("serve", "onnx", "keras", "timeseries", "baselines")

# Written here, not taken from cnnlab.extras: what a core install lacks (the extras'
# packages, their own dependencies that cnnlab imports, and the test tools).
OPTIONAL = (
    "fastapi starlette pydantic pydantic_core anyio uvicorn h11 multipart python_multipart "
    "onnx onnxruntime onnxscript onnx_ir h5py sktime skbase pandas sklearn skimage scipy "
    "httpx selenium"
).split()

# argv: [-c, RESULTS, hide|watch, JSON list of cnnlab argument lists], run one after the
# other in this one process (one torch import); RESULTS gets, per command, its exit code,
# its stderr and the optional modules imported so far.
WRAPPER = """
import contextlib, io, json, sys
OPTIONAL = set(OPTIONAL_NAMES)
RESULTS, MODE, COMMANDS = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
class Hide:
    def __init__(self, inner):
        self.inner = inner
    def __getattr__(self, name):
        return getattr(self.inner, name)
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in OPTIONAL:
            return None
        return self.inner.find_spec(name, path, target)
if MODE == "hide":
    sys.meta_path[:] = [Hide(f) for f in sys.meta_path]
from cnnlab.cli import main
results = []
for argv in COMMANDS:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's errors
            code = exc.code
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in OPTIONAL)
    results.append({"code": code, "err": err.getvalue(), "optional": loaded})
with open(RESULTS, "w") as f:
    json.dump(results, f)
""".replace("OPTIONAL_NAMES", repr(OPTIONAL))


def cnnlab_runs(commands: list[list[str]], tmp: Path, mode: str) -> list[dict[str, Any]]:
    """Each command's {code, err, optional} (``cnnlab ARGS`` in ``tmp``, one process)."""
    results = tmp / "results.json"
    run = subprocess.run(
        [sys.executable, "-c", WRAPPER, str(results), mode, json.dumps(commands)],
        capture_output=True,
        text=True,
        cwd=tmp,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    assert run.returncode == 0 and results.exists(), run.stderr
    found: list[dict[str, Any]] = json.loads(results.read_text())
    return found


def tiny_ucr(data_dir: Path) -> None:
    """A two-class UCR dataset of four cases, as the archive's .ts files."""
    rows = "1,2,3,4,5,6:a\n6,5,4,3,2,1:b\n1,2,3,4,5,7:a\n7,5,4,3,2,1:b\n"
    head = "@problemName Tiny\n@timeStamps false\n@univariate true\n@equalLength true\n"
    head += "@seriesLength 6\n@classLabel true a b\n@data\n"
    folder = data_dir / "ucr" / "Tiny"
    folder.mkdir(parents=True)
    for split in ("TRAIN", "TEST"):
        (folder / f"Tiny_{split}.ts").write_text(head + rows)


CASES = {  # argv, the extra, what the line names
    "serve": (["serve", "no-such-run"], "serve", "cnnlab serve"),
    "allow-host": (["serve", "run", "--allow-host", "example.org"], "serve", "--allow-host"),
    "mechanism": (["mechanism", "--port", "0"], "serve", "cnnlab mechanism"),
    "export": (["export", "no-such-run", "--onnx", "m.onnx"], "onnx", "cnnlab export"),
    "import-keras": (["import-keras", "m.keras", "--out", "r"], "keras", "cnnlab import-keras"),
    "baselines": (["baselines", "--out", "b", "--data-dir", "d"], "baselines", "cnnlab baselines"),
    "ucr": (
        ["train", "--data", "ucr:Tiny", "--data-dir", "d", "--epochs", "1", "--out", "r"],
        "timeseries",
        "Tiny_TRAIN.ts",
    ),
}


@pytest.fixture(scope="module")
def without_extras(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """Every case of CASES, run with the optional packages hidden."""
    tmp = tmp_path_factory.mktemp("no-extras")
    tiny_ucr(tmp / "d")
    results = cnnlab_runs([args for args, _, _ in CASES.values()], tmp, "hide")
    return tmp, dict(zip(CASES, results, strict=True))


@pytest.mark.parametrize("case", CASES)
def test_a_missing_extra_is_one_line_naming_it(
    case: str, without_extras: tuple[Path, dict[str, Any]]
) -> None:
    tmp, results = without_extras
    _, name, feature = CASES[case]
    code, err = results[case]["code"], results[case]["err"]
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert f"needs the '{name}' extra" in lines[0]
    assert f"pip install 'cnnlab[{name}]'" in lines[0]
    assert feature in lines[0]
    assert not (tmp / "r").exists() and not (tmp / "m.onnx").exists()


def synthetic_npz(path: Path) -> None:
    """Tiny 28x28 uint8 images, two classes: a bright top half or a bright bottom half."""
    rng = np.random.default_rng(0)
    y = np.arange(48) % 2
    x = rng.integers(0, 60, size=(48, 28, 28), dtype=np.uint8)
    for i, label in enumerate(y):
        x[i, 14 * label : 14 * label + 14] += 150
    np.savez(path, x_train=x[:32], y_train=y[:32], x_test=x[32:], y_test=y[32:])


@pytest.mark.parametrize("mode", ["hide", "watch"])
def test_core_commands_import_no_optional_package(mode: str, tmp_path: Path) -> None:
    synthetic_npz(tmp_path / "tiny.npz")
    train = ["train", "--case", "1", "--data", "npz:tiny.npz", "--epochs", "1", "--quiet"]
    commands = [
        ["summary", "--case", "1"],
        [*train, "--out", "run"],
        ["evaluate", "run"],
        ["explain", "run", "--index", "0", "--out", "ex"],
    ]
    for args, result in zip(commands, cnnlab_runs(commands, tmp_path, mode), strict=True):
        assert (result["code"], result["optional"]) == (0, []), (args, result["err"])
    assert (tmp_path / "run" / "best.pt").is_file()


def test_watch_sees_an_optional_import(tmp_path: Path) -> None:
    """The check above can fail: an optional command's imports are recorded."""
    pytest.importorskip("h5py")
    (tmp_path / "m.keras").write_bytes(b"not a zip")
    [result] = cnnlab_runs([["import-keras", "m.keras", "--out", "r"]], tmp_path, "watch")
    assert result["code"] == 2 and "h5py" in result["optional"], result["err"]


def test_extra_lets_other_import_errors_through() -> None:
    with pytest.raises(MissingExtra, match=r"needs the 'keras' extra \(h5py is not installed\)"):
        with extra("keras", "x"):
            raise ModuleNotFoundError("No module named 'h5py'", name="h5py")
    with pytest.raises(ModuleNotFoundError):  # not a module of that extra: a real bug
        with extra("keras", "x"):
            raise ModuleNotFoundError("No module named 'pandas'", name="pandas")
    with pytest.raises(ValueError, match="unknown extra"):
        require("gpu", "x")
    assert issubclass(MissingExtra, CnnlabError)  # the CLI's one line, exit 2


def test_require_names_the_package_pip_knows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import raises ModuleNotFoundError
    with pytest.raises(MissingExtra, match=r"\(scikit-learn is not installed\)"):
        require("baselines", "cnnlab baselines")


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def lock() -> dict[str, str]:
    """requirements.lock as {canonical name: version}."""
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9._-]+)==(\S+)$", line.strip())
        if m:
            pins[canonicalize_name(m.group(1))] = m.group(2)
    return pins


def test_pyproject_extras_and_lock_agree() -> None:
    project = pyproject()
    extras = project["optional-dependencies"]
    assert set(extras) == {*FEATURE_EXTRAS, "all", "test"}
    assert set(EXTRAS) == set(FEATURE_EXTRAS)  # cnnlab.extras names the same extras
    assert [Requirement(r).extras for r in extras["all"]] == [set(FEATURE_EXTRAS)]
    assert all(Requirement(r).name == "cnnlab" for r in extras["all"])

    pins = lock()
    named = list(project["dependencies"])
    for name in (*FEATURE_EXTRAS, "test"):
        named += extras[name]
    for text in named:
        req = Requirement(text)
        assert not any(s.operator == "==" for s in req.specifier), f"{text}: a pin, not a range"
        version = pins.get(canonicalize_name(req.name))
        assert version is not None, f"{req.name} is not pinned in requirements.lock"
        assert req.specifier.contains(version, prereleases=True), f"{req.name}=={version}"
    assert pins["torch"] in ("2.13.0", "2.13.0+cpu")
    assert "cnnlab" not in pins


def test_core_dependencies_are_the_core() -> None:
    core = {canonicalize_name(Requirement(r).name) for r in pyproject()["dependencies"]}
    assert core == {"torch", "numpy", "pillow", "pyyaml", "tqdm", "matplotlib"}
