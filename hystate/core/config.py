"""``hystate.yaml``: loaded, validated against ``schema/config.schema.json``, defaults filled."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hystate.core import yamlio
from hystate.core.errors import InvalidData
from hystate.core.paths import NotRegularFile, read_bytes
from hystate.core.schema import load_schema, schema_problems
from hystate.core.urls import check_broker_url, check_webhook_url

CONFIG_FILE = "hystate.yaml"
ROOT_KEY = "state_management"


def _defaults(schema: dict[str, Any]) -> Any:
    if "properties" in schema:
        return {key: _defaults(sub) for key, sub in schema["properties"].items()}
    return copy.deepcopy(schema.get("default"))


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _check_webhook(doc: Any, name: str) -> None:
    """Refuse a bad webhook URL when the config is read, without quoting it (it may carry a
    token): not when the first alert fails after a commit."""
    section = doc.get(ROOT_KEY) if isinstance(doc, dict) else None
    monitoring = section.get("monitoring") if isinstance(section, dict) else None
    url = monitoring.get("webhook_url") if isinstance(monitoring, dict) else None
    problem = check_webhook_url(url) if url is not None else None
    if problem:
        raise InvalidData(f"{name}: {ROOT_KEY}.monitoring.webhook_url: {problem}")


def _check_broker(doc: Any, name: str) -> None:
    """The event broker's URL, checked the same way (it may carry a password)."""
    section = doc.get(ROOT_KEY) if isinstance(doc, dict) else None
    events = section.get("events") if isinstance(section, dict) else None
    url = events.get("url") if isinstance(events, dict) else None
    problem = check_broker_url(url) if url is not None else None
    if problem:
        raise InvalidData(f"{name}: {ROOT_KEY}.events.url: {problem}")


@dataclass
class Config:
    """The effective settings (defaults + file). ``source`` is the file, when there is one."""

    values: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None

    @classmethod
    def defaults(cls) -> Config:
        schema = load_schema("config")["properties"][ROOT_KEY]
        return cls(_defaults(schema))

    @classmethod
    def load(cls, repo_root: Path) -> Config:
        path = repo_root / CONFIG_FILE
        try:
            text = read_bytes(path)
        except FileNotFoundError:
            return cls.defaults()
        except NotRegularFile as exc:
            # a branch may commit hystate.yaml as a link to a secret: never read through it
            raise InvalidData(
                f"{path}: is {exc.kind}, not a file; hystate never follows symlinks"
            ) from None
        return cls.parse(text, path)

    @classmethod
    def parse(cls, text: bytes, path: Path) -> Config:
        name = str(path)
        try:
            doc = yamlio.load(text)
        except yamlio.YAMLError as exc:
            line = yamlio.error_line(exc)
            where = f"{name}: line {line}" if line else name
            raise InvalidData(f"{where}: {yamlio.error_text(exc)}") from None
        if doc is None:
            doc = {}
        _check_webhook(doc, name)
        _check_broker(doc, name)
        problems = schema_problems("config", doc, name)
        if problems:
            first = problems[0]
            key = first.path.removeprefix("$").removeprefix(".") or ROOT_KEY
            raise InvalidData(f"{name}: {key}: {first.message}", problems)
        merged = _merge(cls.defaults().values, doc.get(ROOT_KEY) or {})
        return cls(merged, path)

    def get(self, dotted: str) -> Any:
        value: Any = self.values
        for part in dotted.split("."):
            if not isinstance(value, dict) or part not in value:
                raise KeyError(dotted)
            value = value[part]
        return value

    @property
    def lock_timeout(self) -> float:
        return float(self.get("locks.timeout"))
