"""Network descriptions in files: JSON or YAML, read as data only, with bounded size."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cnnlab import fileio
from cnnlab.errors import MAX_DIGITS, MAX_FLOAT_CHARS, CnnlabError, check_digits
from cnnlab.models.description import ModelDescription
from cnnlab.models.layers import DescriptionError

MAX_FILE_BYTES = fileio.MODEL_DESCRIPTION.limit
MAX_NODES = 50_000  # YAML values in one description: 256 layers of a few dozen arguments
MAX_INT_CHARS = MAX_DIGITS + 6  # sign, 0x and a few _ separators
SUFFIXES = (".json", ".yaml", ".yml")


def _yaml(text: str, path: Path) -> Any:
    import yaml

    class NoAliases(yaml.SafeLoader):
        """SafeLoader without anchors and aliases: no 'billion laughs' expansion."""

        nodes = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                raise yaml.YAMLError("anchors and aliases are not accepted")
            self.nodes += 1  # pure-Python YAML: 524,000 values take 15 s and 600 MB
            if self.nodes > MAX_NODES:
                raise yaml.YAMLError(
                    f"more than {MAX_NODES:,} values, far more than a network needs"
                )
            return super().compose_node(parent, index)

        def construct_yaml_int(self, node: Any) -> Any:
            # yaml's resolver turns decimal, hex, octal and 60:30 text into int() calls
            value, where = str(node.value), f"line {node.start_mark.line + 1}"
            check_digits(value, where)
            if len(value) > MAX_INT_CHARS:  # 0xfff...: hex digits are letters too
                raise CnnlabError(f"{where}: a whole number of {len(value):,} characters")
            return super().construct_yaml_int(node)

        def construct_yaml_float(self, node: Any) -> Any:
            value = str(node.value)
            if len(value) > MAX_FLOAT_CHARS:
                raise CnnlabError(
                    f"line {node.start_mark.line + 1}: a number of {len(value):,} characters "
                    f"(at most {MAX_FLOAT_CHARS})"
                )
            return super().construct_yaml_float(node)

    NoAliases.add_constructor("tag:yaml.org,2002:int", NoAliases.construct_yaml_int)
    NoAliases.add_constructor("tag:yaml.org,2002:float", NoAliases.construct_yaml_float)
    try:
        return yaml.load(text, Loader=NoAliases)
    except CnnlabError as exc:
        raise CnnlabError(f"{path}: {exc}") from None
    except RecursionError:
        raise CnnlabError(f"{path}: nested too deeply") from None
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid YAML"
        raise CnnlabError(f"{path} is not valid YAML ({first})") from None


def _json_int(text: str) -> int:
    check_digits(text, "a number")
    return int(text)


def _json_float(text: str) -> float:
    if len(text) > MAX_FLOAT_CHARS:
        raise CnnlabError(f"a number of {len(text):,} characters (at most {MAX_FLOAT_CHARS})")
    return float(text)


def read_file(path: Path) -> Any:
    """The parsed content of a JSON/YAML file (a regular file of at most 1 MiB)."""
    path = Path(path)
    if not os.path.lexists(path):
        raise CnnlabError(f"model file {path} not found")
    text = fileio.read_text_bounded(path, fileio.MODEL_DESCRIPTION)
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text, parse_int=_json_int, parse_float=_json_float)
        except RecursionError:
            raise CnnlabError(f"{path}: nested too deeply") from None
        except CnnlabError as exc:
            raise CnnlabError(f"{path}: {exc}") from None
        except ValueError as exc:
            raise CnnlabError(f"{path} is not valid JSON ({exc})") from None
    return _yaml(text, path)


def load_description(path: Path) -> ModelDescription:
    """A description from a ``.json``/``.yaml`` file; its name defaults to the file's stem."""
    path = Path(path)
    data = read_file(path)
    stem = "".join(c if c.isalnum() or c in "_-." else "_" for c in path.stem)[:64] or "model"
    try:
        return ModelDescription.from_dict(data, default_name=stem if stem[0].isalpha() else "model")
    except DescriptionError as exc:
        raise DescriptionError(f"{path}: {exc}") from None


def save_description(desc: ModelDescription, path: Path) -> None:
    """Write the canonical JSON form (atomically)."""
    fileio.write_json(Path(path), desc.to_dict())
