"""The common case of ``yamlio.Loader``, built directly (issue 29: `rebuild` reads every file).

PyYAML's C parser composes the nodes; turning them into Python objects is then pure Python, and
its generic constructor (a generator per collection, recursion bookkeeping, a method lookup per
node) was ~60% of parsing an episode file. ``build`` makes the same objects from the same nodes
in one recursive pass for documents made only of block maps with string keys, lists, and plain
scalars of the core tags (str, int, float, bool, null), calling the loader's own constructors
for ints and floats (their bounds checks stay one code path). Anything else (an alias, a merge
key, a non-string key, a duplicate key, any other tag) raises ``Fallback`` and the caller runs
PyYAML's constructor on the document, so every error message and every unusual document is
exactly what it was.

``resolve_cached``: the implicit tag of a plain scalar depends only on its text (hystate's
loader has no path resolvers), and most values repeat from file to file (stages, dates, null).
"""

from __future__ import annotations

from typing import Any

import yaml

STR = "tag:yaml.org,2002:str"
MAP = "tag:yaml.org,2002:map"
SEQ = "tag:yaml.org,2002:seq"
INT = "tag:yaml.org,2002:int"
FLOAT = "tag:yaml.org,2002:float"
BOOL = "tag:yaml.org,2002:bool"
NULL = "tag:yaml.org,2002:null"
CACHE_SIZE = 4096


class Fallback(Exception):
    """The document needs PyYAML's own constructor."""


def build(loader: Any, node: yaml.Node) -> Any:
    """The document ``node`` as ``loader`` would construct it, or ``Fallback``."""
    seen: set[int] = set()
    bools = loader.bool_values

    def make(node: yaml.Node) -> Any:
        if id(node) in seen:  # an alias: PyYAML shares the object; leave it to PyYAML
            raise Fallback
        seen.add(id(node))
        tag = node.tag
        if tag == STR:
            if type(node) is not yaml.ScalarNode:
                raise Fallback
            return node.value
        if tag == MAP:
            if type(node) is not yaml.MappingNode:
                raise Fallback
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if key_node.tag != STR or type(key_node) is not yaml.ScalarNode:
                    raise Fallback
                key = key_node.value
                if key in out:
                    raise Fallback
                out[key] = make(value_node)
            return out
        if tag == SEQ:
            if type(node) is not yaml.SequenceNode:
                raise Fallback
            return [make(item) for item in node.value]
        if type(node) is not yaml.ScalarNode:
            raise Fallback
        if tag == NULL:
            return None
        if tag == INT:
            return loader.construct_yaml_int(node)
        if tag == FLOAT:
            return loader.construct_yaml_float(node)
        if tag == BOOL:
            return bools[node.value.lower()]
        raise Fallback

    return make(node)


def resolve_cached(owner: type, resolve: Any) -> Any:
    """``owner.resolve`` with the tags of plain scalars remembered by their text (for
    ``owner`` itself: a subclass may resolve otherwise)."""
    cache: dict[str, str] = {}

    def resolved(self: Any, kind: type, value: Any, implicit: tuple[bool, bool]) -> str:
        if (
            kind is yaml.ScalarNode
            and implicit[0]
            and type(self) is owner
            and not getattr(self, "yaml_path_resolvers", None)
        ):
            tag = cache.get(value)
            if tag is None:
                tag = resolve(self, kind, value, implicit)
                if len(cache) < CACHE_SIZE:
                    cache[value] = tag
            return tag
        result: str = resolve(self, kind, value, implicit)
        return result

    return resolved
