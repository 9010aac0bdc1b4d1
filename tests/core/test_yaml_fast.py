"""core/yaml_fast.py (issue 29): the direct constructor gives exactly what PyYAML's constructor
gives through hystate's loader, values, key order and errors alike."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from hystate.core import yamlio
from hystate.core.model import new_episode, now_utc
from hystate.core.store import dump


class Generic(yamlio.Loader):
    """hystate's loader with PyYAML's own constructor and resolver (as before issue 29)."""

    def construct_document(self, node: yaml.Node) -> Any:
        return yaml.constructor.BaseConstructor.construct_document(self, node)


Generic.resolve = yamlio._BaseLoader.resolve  # type: ignore[method-assign]


def outcome(text: str | bytes, loader: type) -> tuple[str, Any]:
    try:
        return "ok", yaml.load(text, Loader=loader)
    except yaml.YAMLError as exc:
        return "error", yamlio.error_text(exc)


DOCUMENTS = [
    "a: 1\nb: -2\nc: 0x1f\nd: 0o17\ne: 1_000\nf: +3\n",
    "a: 1.5\nb: 1e3\nc: -.5\nd: 6.8523015e+5\n",
    "a: yes\nb: No\nc: true\nd: FALSE\ne: on\nf: off\n",
    "a: null\nb: ~\nc:\nd: Null\n",
    "a: 2024-01-01\nb: 2024-01-01T10:00:00Z\nc: '2024'\nd: \"x\"\n",
    "a: [1, 2, {b: c}]\nd:\n  - e\n  - f: [g]\n",
    "a: &x {b: 1}\nc: *x\n",
    "base: &b {x: 1}\nderived:\n  <<: *b\n  y: 2\n",
    "a: 1\na: 2\n",
    "1: one\n",
    "? [a]\n: b\n",
    "a: !!str 12\nb: !!int '12'\nc: !!float '1'\nd: !!bool 'true'\n",
    "a: !!seq {b: c}\n",
    "a: !!map [b]\n",
    "a: !!binary aGk=\n",
    "a: !!timestamp 2024-01-01\n",
    "a: !!set {b, c}\n",
    "a: 99999999999999999999\n",
    "a: .nan\n",
    "a: 1e999\n",
    "a: !custom x\n",
    "- a\n- b\n",
    "just text\n",
    "",
    "a: {b: {c: {d: [1, [2, [3]]]}}}\n",
    "a: |\n  block\n  text\nb: >\n  folded\n",
]


@pytest.mark.parametrize("text", DOCUMENTS)
def test_same_result_or_same_error_as_pyyaml(text: str) -> None:
    fast, generic = outcome(text, yamlio.Loader), outcome(text, Generic)
    assert fast == generic
    if fast[0] == "ok" and isinstance(fast[1], dict):
        assert list(fast[1]) == list(generic[1])


def test_an_episode_file_takes_the_direct_path_and_reads_back() -> None:
    doc = new_episode("hy0_x", title="a: b # c", date="2004-01-01", at=now_utc(), by="t")
    data = dump(doc)
    loader = yamlio.Loader(data)
    try:
        node = loader.get_single_node()
        assert node is not None
        from hystate.core import yaml_fast

        assert yaml_fast.build(loader, node) == doc  # no Fallback raised
    finally:
        loader.dispose()
    assert yamlio.load(data) == doc
