"""``hystate.git.treediff``: the entries that differ between two tree objects, found in their
bytes, are those ``hystate.git.trees.Tree`` finds by parsing both (shas hold any byte: NUL,
space, the bytes of a name)."""

from __future__ import annotations

import random

import pytest

from hystate.core.errors import GitError
from hystate.git import treediff
from hystate.git.trees import Tree


def entry(name: bytes, sha: bytes, mode: bytes = b"100644") -> bytes:
    return mode + b" " + name + b"\0" + sha


def tree(entries: dict[bytes, bytes]) -> bytes:
    return b"".join(entries[n] for n in sorted(entries))


def expected(a: bytes, b: bytes) -> dict[bytes, tuple[bytes | None, bytes | None]]:
    old, new = Tree.parse(a), Tree.parse(b)

    def whole(t: Tree, name: bytes) -> bytes | None:
        found = t.get(name)
        return None if found is None else found[0] + b" " + name + b"\0" + found[1]

    return {n: (whole(old, n), whole(new, n)) for n in old.changed(new)}


def sha(rng: random.Random) -> bytes:
    alphabet = [0, 32, 48, 97, 255]  # NUL, space, "0", "a": what could fool a parser
    return bytes(
        rng.choice(alphabet) if rng.random() < 0.5 else rng.randrange(256) for _ in range(20)
    )


@pytest.mark.parametrize("seed", range(300))
def test_the_same_entries_as_parsing_both_trees(seed: int) -> None:
    rng = random.Random(seed)
    names = [
        f"hy_{i:04d}{rng.choice(['', 'a', 'aa'])}.yaml".encode()
        for i in range(rng.randrange(0, 60))
    ]
    shared = {n: entry(n, sha(rng)) for n in names}
    before, after = dict(shared), dict(shared)
    for _ in range(rng.randrange(0, 5)):
        kind = rng.choice(["sha", "add", "remove", "mode", "tail"])
        name = (
            rng.choice(names)
            if names and kind != "add"
            else f"hy_{rng.randrange(9999):04d}b.yaml".encode()
        )
        if kind in ("sha", "add"):
            after[name] = entry(name, sha(rng))
        elif kind == "remove":
            after.pop(name, None)
        elif kind == "mode":
            after[name] = entry(name, after.get(name, shared.get(name, b"x" * 20))[-20:], b"100755")
        else:  # a sha sharing its last bytes with the old one's
            old_sha = after.get(name, entry(name, sha(rng)))[-20:]
            after[name] = entry(name, sha(rng)[:10] + old_sha[10:])
    a, b = tree(before), tree(after)
    assert treediff.changed(a, b) == expected(a, b)
    assert treediff.changed(b, a) == expected(b, a)


def test_a_corrupt_tree_is_an_error() -> None:
    good = tree({b"a.yaml": entry(b"a.yaml", b"\0" * 20), b"b.yaml": entry(b"b.yaml", b"1" * 20)})
    with pytest.raises(GitError):
        treediff.changed(good, good[:-5] + b"zz")
    assert treediff.changed(good, good) == {}
    assert treediff.changed(b"", good) == expected(b"", good)


def test_an_entry_whose_bytes_end_another_is_not_taken_for_it() -> None:
    """The old entry ``b`` is the last bytes of the new entry ``b 100644 b`` (a name may hold
    spaces), and ``a`` changed before them: the common end of both objects starts inside the
    new entry, where no entry of the old one starts; both are cut until as many bytes are
    left in each."""
    shared, last = b"\x01" * 20, entry(b"c", b"\x03" * 20)
    a = entry(b"a", b"\x02" * 20) + entry(b"b", shared) + last
    b = entry(b"a", b"\x04" * 20) + entry(b"b 100644 b", shared) + last
    assert b.endswith(entry(b"b", shared) + last)
    assert treediff.changed(a, b) == expected(a, b)
    assert set(treediff.changed(a, b)) == {b"a", b"b", b"b 100644 b"}
