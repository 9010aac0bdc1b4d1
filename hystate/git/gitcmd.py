"""How hystate runs git: every command gets the same pinned settings, and the environment that
names the repository hystate found (so a child git finds that one, whatever the cwd).

What hystate reads back from git (log formats, trailers, grep, paths) must not bend to a
person's configuration: ``log.showSignature`` prints signature text before every record,
``trailer.separators`` or ``core.commentChar`` stop git from seeing the trailers at all,
``grep.patternType=fixed`` makes ``--grep=^Hystate-`` match nothing, ``log.follow`` follows a
file across renames, ``i18n.logOutputEncoding`` re-encodes messages. Each is pinned here with
``-c`` on every command; none changes what git writes, except ``i18n.commitEncoding``: the
messages hystate gives ``git commit-tree`` are UTF-8, whatever a person's setting says.
"""

from __future__ import annotations

from collections.abc import Mapping

# (key, value): the settings that shape what git prints, pinned to git's defaults.
PINNED: tuple[tuple[str, str], ...] = (
    ("log.showSignature", "false"),
    ("log.follow", "false"),
    ("log.mailmap", "false"),
    ("log.showRoot", "true"),
    ("log.decorate", "false"),
    ("trailer.separators", ":"),
    ("core.commentChar", "#"),
    ("core.quotePath", "false"),
    ("i18n.logOutputEncoding", "UTF-8"),
    ("i18n.commitEncoding", "UTF-8"),  # hystate's messages are UTF-8 (commit-tree)
    ("grep.patternType", "basic"),
    ("grep.extendedRegexp", "false"),
    ("color.ui", "false"),
    ("diff.noprefix", "false"),
    ("diff.mnemonicPrefix", "false"),
    ("diff.relative", "false"),
    ("format.pretty", "medium"),
)
_ARGS = tuple(arg for key, value in PINNED for arg in ("-c", f"{key}={value}"))


def argv(*args: str) -> list[str]:
    """``git <pinned settings> args``."""
    return ["git", *_ARGS, *args]


def child_env(
    base: Mapping[str, str], git_dir: str, work_tree: str, index: str | None
) -> dict[str, str]:
    """``base`` with the repository named explicitly: ``GIT_DIR`` and ``GIT_WORK_TREE`` (absolute,
    as git itself resolved them), ``GIT_INDEX_FILE`` only when the person set one."""
    env = {**base, "GIT_DIR": git_dir, "GIT_WORK_TREE": work_tree}
    if index is not None:
        env["GIT_INDEX_FILE"] = index
    return env


# ``git status`` as ``RepoBase.dirty_paths`` runs it, and the paths it names
STATUS = (
    "--no-optional-locks", "status", "--porcelain=v1", "-z", "--untracked-files=all",
    "--no-renames",
)  # fmt: skip


def status_paths(out: str) -> list[str]:
    return sorted({entry[3:] for entry in out.split("\0") if len(entry) > 3})
