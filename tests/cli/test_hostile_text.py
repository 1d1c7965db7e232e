"""Issue 21, classes 4 and 5: numbers too large, and messages that are not one printable line.

One table, one row per reproduction: each runs the real command line in-process and
expects exit 2, at most 3 stderr lines, each printable and bounded, no traceback, no
warning before the error, and nothing written where the command was pointed.
"""

from __future__ import annotations

import importlib.util
import json
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from cnnlab.cli.main import main
from cnnlab.errors import printable

BIG = "9" * 5000  # past Python's 4,300-digit int() limit
MAX_LINE = 1100  # cnnlab.errors.MAX_LINE (1,000) and the "cnnlab: error: " prefix
MAX_FLAG_LINE = 500  # argparse's refusals: 400 characters and the command's name
needs_sktime = pytest.mark.skipif(
    importlib.util.find_spec("sktime") is None, reason="sktime (the .ts reader) not installed"
)
Build = Callable[[Path], tuple[list[str], str]]  # tmp folder -> (argv, expected fragment)


def yaml_model(text: str) -> Build:
    def build(tmp: Path) -> tuple[list[str], str]:
        (tmp / "m.yaml").write_text(text)
        return ["summary", "--model", str(tmp / "m.yaml")], "m.yaml"

    return build


def json_model(data: object) -> Build:
    def build(tmp: Path) -> tuple[list[str], str]:
        (tmp / "m.json").write_text(json.dumps(data))
        return ["summary", "--model", str(tmp / "m.json")], "m.json"

    return build


def raw_json(text: str, expect: str = "m.json") -> Build:
    def build(tmp: Path) -> tuple[list[str], str]:
        (tmp / "m.json").write_text(text)
        return ["summary", "--model", str(tmp / "m.json")], expect

    return build


def line_model(text: str, expect: str) -> Build:
    return lambda tmp: (["summary", "--model", text], expect)


def flags(*argv: str, expect: str) -> Build:
    return lambda tmp: (list(argv), expect)


def ts_pair(header: str, train_rows: str, expect: str) -> Build:
    """A UCR folder T whose TRAIN and TEST carry ``header``; ``train`` on it."""

    def build(tmp: Path) -> tuple[list[str], str]:
        folder = tmp / "data" / "ucr" / "T"
        folder.mkdir(parents=True)
        head = f"@problemName T\n@timeStamps false\n@equalLength true\n{header}\n@data\n"
        (folder / "T_TRAIN.ts").write_text(head + train_rows)
        (folder / "T_TEST.ts").write_text(head + "1,2,3,4:a\n4,3,2,1:b\n")
        argv = ["train", "--data", "ucr:T", "--data-dir", str(tmp / "data"), "--epochs", "1"]
        return [*argv, "--out", str(tmp / "run")], expect

    return build


UNI = "@univariate true\n@seriesLength 4\n"
ROWS: dict[str, Build] = {
    # class 4: numbers with too many digits, refused before int() sees them
    "yaml-decimal": yaml_model(f"input_shape: [28, 28, 1]\nlayers: [Dense: {{units: {BIG}}}]\n"),
    "yaml-hex": yaml_model(f"input_shape: [28, 28, 1]\nlayers: [Dense: {{units: 0x{BIG}}}]\n"),
    "yaml-hex-letters": yaml_model(
        f"input_shape: [28, 28, 1]\nlayers: [Dense: {{units: 0x{'f' * 5000}}}]\n"
    ),
    "yaml-sexagesimal": yaml_model(
        f"input_shape: [28, 28, 1]\nlayers: [Dense: {{units: {BIG}:30}}]\n"
    ),
    "yaml-huge-float": yaml_model(
        f"input_shape: [28, 28, 1]\nlayers: [Dropout: {{rate: 0.{BIG}e+10}}]\n"
    ),
    "yaml-shape": yaml_model(f"input_shape: [28, {BIG}, 1]\nlayers: [Flatten: {{}}]\n"),
    "json-decimal": raw_json(
        f'{{"input_shape": [28, 28, 1], "layers": [{{"Dense": {{"units": {BIG}}}}}]}}'
    ),
    "line-dense": line_model(f"Input(28,28,1) Flatten Dense({BIG})", "the model line"),
    "line-input": line_model(f"Input(28,{BIG},1) Flatten Dense(3)", "the model line"),
    "line-keyword": line_model(f"Input(28,28,1) Flatten Dense(units={BIG})", "the model line"),
    "line-axes": line_model(f"Input(28,28,1) Conv2D(3,{BIG}x3)", "the model line"),
    "line-float": line_model(f"Input(28,28,1) Flatten Dropout(0.{BIG})", "the model line"),
    "ts-series-length": ts_pair(
        f"@univariate true\n@seriesLength {BIG}\n@classLabel true a b",
        "1,2,3,4:a\n4,3,2,1:b\n",
        "@serieslength",
    ),
    "ts-dimensions": ts_pair(
        f"@univariate false\n@dimensions {BIG}\n@classLabel true a b",
        "1,2,3,4:a\n4,3,2,1:b\n",
        "@dimensions",
    ),
    "ts-class-label": ts_pair(
        f"{UNI}@classLabel true 1 {BIG}", f"1,2,3,4:1\n4,3,2,1:{BIG}\n", "@classLabel"
    ),
    "flag-max-upload-mb": flags(
        "serve", "nowhere", "--max-upload-mb", "99999999999999999999", expect="at most 1,024"
    ),
    "flag-max-upload-mb-big": flags("serve", "x", "--max-upload-mb", "2048", expect="1,024"),
    "flag-max-connections": flags("serve", "x", "--max-connections", BIG, expect="65,536"),
    "flag-max-megapixels": flags("serve", "x", "--max-megapixels", BIG, expect="at most"),
    "flag-port": flags("serve", "x", "--port", BIG, expect="--port"),
    "flag-port-70000": flags("serve", "x", "--port", "70000", expect="at most 65,535"),
    "flag-header-timeout": flags("serve", "x", "--header-timeout", f"1e{BIG}", expect="3600 s"),
    "flag-allow-origin": flags("serve", "x", "--allow-origin", f"http://a:{BIG}", expect="origin"),
    "flag-allow-host": flags("serve", "x", "--allow-host", f"a:{BIG}", expect="host name"),
    "flag-mechanism-port": flags("mechanism", "--port", BIG, expect="at most 65,535"),
    "flag-image-size": flags("train", "--image-size", f"{BIG}x3", expect="HxW"),
    "flag-epochs": flags("train", "--epochs", BIG, expect="at most 1,000,000,000"),
    "flag-seed": flags("train", "--seed", "4294967296", expect="at most 4,294,967,295"),
    "flag-channels": flags("train", "--channels", BIG, expect="from 1 to 4"),
    "flag-workers": flags("train", "--workers", BIG, expect="from 1 to 256"),
    "flag-lr-long": flags("train", "--lr", "1" * 5000, expect="5,000 characters"),
    "flag-plateau-nan": flags("train", "--plateau-factor", "nan", expect="below 1"),
    # class 5: one printable line
    "class-name-escapes": json_model(
        {"input_shape": [28, 28, 1], "layers": [{"class_name": "Den\nse\x1b[2J\x07"}]}
    ),
    "class-name-long": json_model(
        {"input_shape": [28, 28, 1], "layers": [{"class_name": "x" * 500_000}]}
    ),
    # JSON: PyYAML's pure-Python parser takes ~30 s over a 524,000-entry flow list
    "huge-input-shape": raw_json(
        '{"input_shape":[' + ",".join(["1"] * 524_000) + '],"layers":[{"Flatten":{}}]}',
        "got 524,000 sizes",
    ),
    "long-model-name": raw_json(
        json.dumps({"name": "x" * 524_000, "input_shape": [4, 1], "layers": [{"Flatten": {}}]}),
        "… (524,002 characters)",
    ),
    "huge-yaml-list": yaml_model(  # stopped at 50,000 values, not parsed whole (15 s)
        "input_shape: [" + ",".join(["1"] * 524_000) + "]\nlayers: [Flatten: {}]\n"
    ),
    "megabyte-string": yaml_model(
        "input_shape: [28, 28, 1]\nlayers: [Dense: {units: 2, activation: "
        + "x" * 1_040_000
        + "}]\n"
    ),
    "megabyte-units": yaml_model(
        "input_shape: [28, 28, 1]\nlayers: [Dense: {units: " + "\u2028x" * 500_000 + "}]\n"
    ),
    "ts-overflow-1e39": ts_pair(
        f"{UNI}@classLabel true a b", "1,2,3,1e39:a\n4,3,2,1:b\n", "infinite"
    ),
    "mixed-keys-top": yaml_model("input_shape: [28, 28, 1]\n1: 2\nlayers: [Flatten: {}]\n"),
    "mixed-keys-input": yaml_model(
        "layers:\n  - Input: {shape: [28, 28, 1], 1: 2, a: 3}\n  - Flatten: {}\n"
    ),
    "mixed-keys-layer": yaml_model(
        "input_shape: [28, 28, 1]\nlayers: [Dense: {units: 2, 1: 2, b: 3}]\n"
    ),
}


def check_one_line(err: str, expect: str) -> None:
    lines = err.splitlines()
    assert 1 <= len(lines) <= 3, err[:2000]
    assert "Traceback" not in err and "Warning" not in err, err[:2000]
    assert all(line.isprintable() and len(line) < MAX_LINE for line in lines), err[:2000]
    assert expect in err, err[:2000]


@pytest.mark.parametrize("row", list(ROWS))
def test_hostile_text_is_one_printable_line(
    row: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if row.startswith("ts-") and importlib.util.find_spec("sktime") is None:
        pytest.skip("sktime (the .ts reader) not installed")
    argv, expect = ROWS[row](tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert run(argv) == 2
    err = capsys.readouterr().err
    check_one_line(err, expect)
    assert not row.startswith("flag-") or len(err) < MAX_FLAG_LINE, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no run folder made


def run(argv: list[str]) -> int | str | None:
    """The exit code of the real command line (argparse's refusals exit)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def test_class_name_message_names_it_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv, _ = ROWS["class-name-escapes"](tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "\\x1b[2J" in err and "Den\\nse" in err and "got None" not in err
    assert "unknown layer" in err and "did you mean Dense?" in err


def test_long_values_are_cut_with_their_length() -> None:
    assert printable("x" * 1_048_576, 80) == "x" * 80 + "… (1,048,576 characters)"
    assert printable("a\nb\x1b[2J\u2028") == "a\\nb\\x1b[2J\\u2028"
    assert printable("plain text, kept") == "plain text, kept"


@needs_sktime
def test_a_class_absent_from_train_is_one_warning_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cnnlab.data import ucr

    build = ts_pair(f"{UNI}@classLabel true a b c", "1,2,3,4:a\n4,3,2,1:b\n" * 2, "")
    build(tmp_path)
    data = ucr.load_ucr("T", tmp_path / "data", allow_download=False)
    assert data.classes == ["a", "b", "c"]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cnnlab: warning:" in err and "'c', never in TRAIN" in err


def test_heavy_rows_stay_within_memory_and_time(tmp_path: Path) -> None:
    """In a child process (peak RSS measured there): the 5,000-digit YAML, the 1 MB string,
    the 524,000-entry shape and the 1e39 .ts value. Bounds are safety limits (1.5 GB, 60 s
    each), not timings."""
    rows = ["yaml-decimal", "megabyte-string", "huge-input-shape", "line-dense"]
    if importlib.util.find_spec("sktime") is not None:
        rows.append("ts-overflow-1e39")  # numpy's warning shows only outside pytest's capture
    for row in rows:
        folder = tmp_path / row
        folder.mkdir()
        argv, expect = ROWS[row](folder)
        proc = subprocess.run(
            [sys.executable, "-m", "cnnlab.cli", *argv], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 2
        check_one_line(proc.stderr, expect)
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    assert peak_kib < 1536 * 1024, f"peak RSS {peak_kib / 1024:.0f} MiB"
