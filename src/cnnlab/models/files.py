"""Network descriptions in files: JSON or YAML, read as data only, with bounded size."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cnnlab import fileio
from cnnlab.errors import CnnlabError
from cnnlab.models.description import ModelDescription
from cnnlab.models.layers import DescriptionError

MAX_FILE_BYTES = fileio.MODEL_DESCRIPTION.limit
SUFFIXES = (".json", ".yaml", ".yml")


def _yaml(text: str, path: Path) -> Any:
    import yaml

    class NoAliases(yaml.SafeLoader):
        """SafeLoader without anchors and aliases: no 'billion laughs' expansion."""

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                raise yaml.YAMLError("anchors and aliases are not accepted")
            return super().compose_node(parent, index)

    try:
        return yaml.load(text, Loader=NoAliases)
    except RecursionError:
        raise CnnlabError(f"{path}: nested too deeply") from None
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid YAML"
        raise CnnlabError(f"{path} is not valid YAML ({first})") from None


def read_file(path: Path) -> Any:
    """The parsed content of a JSON/YAML file (a regular file of at most 1 MiB)."""
    path = Path(path)
    if not os.path.lexists(path):
        raise CnnlabError(f"model file {path} not found")
    text = fileio.read_text_bounded(path, fileio.MODEL_DESCRIPTION)
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except RecursionError:
            raise CnnlabError(f"{path}: nested too deeply") from None
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
