"""The one place that fixes how YAML is read and written.

Every episode file goes through ``load``/``dump`` so all files look alike: fixed key order
(the dicts are built in order), no line folding, unicode kept, C-accelerated when libyaml
is present (about 8x faster here). Timestamps are not turned into ``datetime`` objects: they stay
strings, which is what the schema describes. Duplicate keys are an error, never last-one-wins.

Hostile documents are bounded before they are parsed (``check_bounds``): size, nesting depth
and the size aliases expand to. The C loader crashes the process at a depth of ~60,000, the
Python constructor recurses out at ~20,000 and a 1 KB "billion laughs" expands to gigabytes;
all of them are refused in milliseconds with a YAMLError. Keys must be strings, integers must
fit SQLite's 64 bits and floats must be finite, so nothing read here can crash a later step.
"""

from __future__ import annotations

import math
import re
from typing import Any

import yaml

from hystate.core import yaml_fast

try:
    from yaml import CSafeDumper as _BaseDumper
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeDumper as _BaseDumper  # type: ignore[assignment]
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]

_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_STR = "tag:yaml.org,2002:str"

MAX_BYTES = 4 * 1024 * 1024  # an episode file is ~1 KB; its longest field (traceback) 100 KB
MAX_DEPTH = 64  # an episode file nests 3 deep, the config 4
MAX_NODES = 200_000  # nodes after expanding aliases
INT_MIN, INT_MAX = -(2**63), 2**63 - 1  # SQLite's INTEGER
# Leading spaces, tabs, dashes and '?' bound how deep block collections can nest on a line;
# flow collections need brackets and aliases need anchors. Only then is the event scan paid
# (~75 us for an episode file, half the cost of loading it).
_LEADING = re.compile(rb"^[ \t?-]*", re.MULTILINE)


class BoundsError(yaml.YAMLError):
    """A document over the size, depth or alias-expansion bounds (refused before parsing)."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.context = None


def check_bounds(text: str | bytes, *, max_bytes: int = MAX_BYTES) -> None:
    """Raise BoundsError for a document too large, too deep or expanding too far."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    if len(data) > max_bytes:
        raise BoundsError(f"document is {len(data):,} bytes; at most {max_bytes:,} are read")
    if b"&" in data:
        _scan_events(data)
        return
    # an upper bound of the depth: block levels need indentation or a '-'/'?' at the start
    # of a line; flow levels need a bracket each
    brackets = data.count(b"[") + data.count(b"{")
    if brackets + 2 > MAX_DEPTH or brackets + 2 + _widest(data) > MAX_DEPTH:
        _scan_events(data)


def _widest(data: bytes) -> int:
    return max(map(len, _LEADING.findall(data)), default=0)


def _scan_events(data: bytes) -> None:
    """Walk the parser's events (libyaml's parser is iterative: no recursion to blow up),
    counting depth and the nodes every alias expands to."""
    depth = 0
    total = 0
    counts: list[int] = [0]
    anchors: list[str | None] = [None]
    sizes: dict[str, int] = {}
    parser = _BaseLoader(data)
    try:
        while True:
            event = parser.get_event()
            if event is None:
                break
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise BoundsError(f"nested more than {MAX_DEPTH} levels deep")
                counts.append(1)
                anchors.append(event.anchor)
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
                size = counts.pop()
                anchor = anchors.pop()
                if anchor is not None:
                    sizes[anchor] = size
                counts[-1] += size
            elif isinstance(event, yaml.AliasEvent):
                size = sizes.get(event.anchor or "", 1)
                counts[-1] += size
                total += size
            elif isinstance(event, yaml.ScalarEvent):
                counts[-1] += 1
                if event.anchor is not None:
                    sizes[event.anchor] = 1
                total += 1
            if counts[-1] > MAX_NODES or total > MAX_NODES:
                raise BoundsError(f"expands to more than {MAX_NODES:,} values (aliases?)")
    finally:
        parser.dispose()


class Loader(_BaseLoader):
    """Safe loader: no timestamps as objects, no duplicate keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if not isinstance(node, yaml.MappingNode):  # `!!map [a]`: PyYAML's own error
            return super().construct_mapping(node, deep=deep)
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag != _STR and key_node.tag != "tag:yaml.org,2002:merge":
                raise yaml.constructor.ConstructorError(
                    None, None, "keys must be strings (quote it)", key_node.start_mark
                )
            # plain scalar keys (all of an episode file's) are compared as text, without
            # building them twice; anything else is constructed to compare
            if isinstance(key_node, yaml.ScalarNode):
                key: Any = (key_node.tag, key_node.value)
            else:
                key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_document(self, node: yaml.Node) -> Any:
        """The common document directly (``yaml_fast``); anything else, or any error, by
        PyYAML's constructor (so errors read as they always did)."""
        try:
            return yaml_fast.build(self, node)
        except (yaml_fast.Fallback, yaml.constructor.ConstructorError):
            return super().construct_document(node)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        value: int = super().construct_yaml_int(node)
        if not INT_MIN <= value <= INT_MAX:
            raise yaml.constructor.ConstructorError(
                None, None, "integer does not fit in 64 bits", node.start_mark
            )
        return value

    def construct_yaml_float(self, node: yaml.ScalarNode) -> float:
        value: float = super().construct_yaml_float(node)
        if not math.isfinite(value):
            raise yaml.constructor.ConstructorError(
                None, None, "number is not finite (.nan, .inf or too large)", node.start_mark
            )
        return value


Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _TIMESTAMP]
    for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
}
Loader.resolve = yaml_fast.resolve_cached(Loader, _BaseLoader.resolve)  # type: ignore[method-assign]
Loader.add_constructor("tag:yaml.org,2002:map", Loader.construct_mapping)
Loader.add_constructor("tag:yaml.org,2002:int", Loader.construct_yaml_int)
Loader.add_constructor("tag:yaml.org,2002:float", Loader.construct_yaml_float)


def _not_json(loader: Loader, node: yaml.Node) -> Any:
    """Values JSON (and so the schema and the caches) cannot hold are refused as data."""
    raise yaml.constructor.ConstructorError(
        None, None, f"{node.tag.rsplit(':', 1)[-1]} values are not allowed here", node.start_mark
    )


for _tag in ("timestamp", "binary", "set", "omap", "pairs"):
    Loader.add_constructor(f"tag:yaml.org,2002:{_tag}", _not_json)


class Dumper(_BaseDumper):
    """Safe dumper; strings that would read back as another type are quoted."""


YAMLError = yaml.YAMLError


def load(text: str | bytes, *, max_bytes: int = MAX_BYTES) -> Any:
    """Parse one document, refusing hostile ones first (BoundsError, a YAMLError)."""
    check_bounds(text, max_bytes=max_bytes)
    try:
        return yaml.load(text, Loader=Loader)
    except RecursionError:  # pragma: no cover - check_bounds keeps documents shallower
        raise BoundsError(f"nested more than {MAX_DEPTH} levels deep") from None


def dump(data: Any) -> str:
    return yaml.dump(
        data,
        Dumper=Dumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=2**31 - 1,
    )


def error_line(exc: yaml.YAMLError) -> int | None:
    """1-based line of a YAML error, when PyYAML knows it."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return None if mark is None else int(mark.line) + 1


def error_text(exc: yaml.YAMLError) -> str:
    """PyYAML's multi-line error folded into one line."""
    problem = getattr(exc, "problem", None)
    context = getattr(exc, "context", None)
    if problem:
        return f"{context}: {problem}" if context else str(problem)
    return " ".join(str(exc).split())
