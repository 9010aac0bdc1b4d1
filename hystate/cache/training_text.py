"""A kept training set (``hystate.cache.forecast_queries.training_runs``) changed in its text
(issue 29): ``hystate.cache.follow`` carries it through a transition by putting in, replacing
or cutting out the entries of a few episodes, where a bisection finds them, and copying the
text between, instead of decoding and encoding ~9,000 runs or cutting the text into its
~1,700 entries (~330 KB at 100,000 episodes). The result is the text ``json.dumps`` writes for
the new value; a text of any other shape is declined (``None``, or ``Shape`` where a bisection
finds something else than an entry), and the carry then decodes it."""

from __future__ import annotations

import bisect
import json
import re
from typing import Any

# the training set as json.dumps writes it: {"candidates": [...], "runs": {"<id>": [[...]], ...}}
HEAD, RUNS, END = '{"candidates": ', ', "runs": {', "}}"
_SEP = ']], "'  # between two episodes' runs: a run is a list of numbers, null and stage names
IDS = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9._-]*\n)*")  # ids as the schema has them: no escapes
_SEPS = re.compile(re.escape(_SEP))
_KEY = re.compile(r'([A-Za-z0-9][A-Za-z0-9._-]*)": \[\[')  # an entry's id, where it starts


def entry(episode: str, runs: list[list[Any]]) -> str:
    """An episode's entry as ``Body.splice`` takes it: ``<id>": [[...]`` (what lies
    between the quote before the id and the ``]]`` after the runs in ``json.dumps``)."""
    return json.dumps({episode: runs}, allow_nan=False)[2:-3]


class Shape(ValueError):
    """The kept text is not what ``json.dumps`` wrote for a training set."""


class Body:
    """The runs of a training set as ``json.dumps`` wrote them: ``"<id>": [[...]], "<id>":
    [[...]]``, in id order. Each entry's place is where a separator ends (found by the C
    loop of ``finditer``); an entry's id is read only where a bisection looks, and checked
    there to start an entry."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.starts = [1, *(m.end() for m in _SEPS.finditer(text))] if text else []

    def key(self, i: int) -> str:
        """The id of the ``i``th entry (``Shape`` where none starts there)."""
        found = _KEY.match(self.text, self.starts[i])
        if found is None:
            raise Shape("not an entry's start")
        return found.group(1)

    def end(self, i: int) -> int:
        """Where the ``i``th entry ends (after its ``]]``): where the next one starts, checked
        (a stage name ending in ``]], `` holds a separator)."""
        end = len(self.text)
        if i + 1 < len(self.starts):
            self.key(i + 1)
            end = self.starts[i + 1] - 3
        if self.text[end - 2 : end] != "]]":
            raise Shape("not an entry's end")
        return end

    def splice(self, entries: dict[str, str | None]) -> tuple[str, bool]:
        """The text with the entry of each episode in ``entries`` (as ``_entry`` makes it)
        put in, replaced, or (None) cut out; and whether it is the same as before."""
        segments: list[str] = []
        pos, same = 0, True
        for episode in sorted(entries):
            i = bisect.bisect_left(range(len(self.starts)), episode, key=self.key)
            at = self.starts[i] - 1 if i < len(self.starts) else len(self.text)
            segments.append(self.text[pos:at])
            before = None
            if i < len(self.starts) and self.key(i) == episode:
                pos = self.end(i)
                before = self.text[at:pos]
            else:
                pos = at
            after = entries[episode]
            if after is not None:
                segments.append(f'"{after}]]')
            same = same and before == (None if after is None else f'"{after}]]')
        segments.append(self.text[pos:])
        kept = (s.removeprefix(", ").removesuffix(", ") for s in segments)
        return ", ".join(s for s in kept if s), same


def compose(candidates: list[str], body: str) -> str:
    """A training set's text from its candidates and its runs' text (``Body.splice``)."""
    return f"{HEAD}{json.dumps(candidates)}{RUNS}{body}{END}"


def parse(text: str) -> tuple[list[str], Body] | None:
    """The candidates and the runs of a training set's text, or None when the text is not of
    the shape ``json.dumps`` writes for one."""
    cut = text.find(RUNS)
    if not text.startswith(HEAD) or not text.endswith(END) or cut < 0:
        return None
    candidates = json.loads(text[len(HEAD) : cut])
    body = text[cut + len(RUNS) : -len(END)]
    if not isinstance(candidates, list) or (body and (body[0] != '"' or body[-2:] != "]]")):
        return None
    return candidates, Body(body)
