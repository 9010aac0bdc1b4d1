"""What a transition no longer reads every time (git's attributes files, git's config) is read
again whenever another process changed it between two transitions: same size and mtime put
back included (``hystate.core.filestamp``; its own tests cover the stamp and the racy rule)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hystate.core import filestamp
from hystate.git import settings
from hystate.git.settings import GitSettings
from hystate.manager import StateManager
from tests.conftest import git


@pytest.fixture
def settled_now(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every stamp counts as settled: only the stamp itself can catch the change."""
    monkeypatch.setattr(filestamp, "RACY_NS", -(10**12))


def rewrite_elsewhere(path: Path, old: bytes, new: bytes) -> None:
    """Another process replaces ``old`` by ``new`` (same length) in ``path`` in place and puts
    its mtime back to the nanosecond; repeated until the change has a ctime of its own (what
    the racy rule guarantees in real use)."""
    assert len(old) == len(new)
    script = (
        "import os, sys\n"
        "path, old, new = sys.argv[1], sys.argv[2].encode(), sys.argv[3].encode()\n"
        "st = os.stat(path)\n"
        "data = open(path, 'rb').read()\n"
        "with open(path, 'r+b') as fh:\n"
        "    fh.write(data.replace(old, new))\n"
        "os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))\n"
    )
    before = os.stat(path)
    subprocess.run([sys.executable, "-c", script, str(path), old, new], check=True)
    while os.stat(path).st_ctime_ns == before.st_ctime_ns:
        time.sleep(0.005)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )


def test_attributes_changed_between_two_transitions(repo: Path, settled_now: None) -> None:
    manager = StateManager(cwd=repo, worker="w")
    ids = sorted(p.stem for p in manager.store.iter_paths())
    rel = manager.repo.relpath(manager.path_of(ids[0]))
    assert manager.update_state(ids[0], "downloading").commit
    assert manager.repo.plain_attributes([rel])
    attributes = repo / "processed" / ".gitattributes"
    rewrite_elsewhere(attributes, b" -text ", b"  text ")  # now sets text: may convert
    assert not manager.repo.plain_attributes([rel])
    rewrite_elsewhere(attributes, b"  text ", b" -text ")
    assert manager.repo.plain_attributes([rel])
    # a .gitattributes deeper down, and info/attributes, are looked at each time too
    deeper = repo / rel.rpartition("/")[0] / ".gitattributes"
    deeper.write_text("*.yaml filter=lfs\n")
    assert not manager.repo.plain_attributes([rel])
    deeper.unlink()
    assert manager.repo.plain_attributes([rel])
    info = repo / ".git" / "info" / "attributes"
    info.parent.mkdir(exist_ok=True)
    info.write_text("* text\n")
    assert not manager.repo.plain_attributes([rel])
    info.unlink()
    assert manager.update_state(ids[1], "downloading").commit


def test_git_config_changed_in_place_is_read_again(tmp_path: Path, settled_now: None) -> None:
    root = tmp_path / "r"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "hystate.groupCommit", "true")
    settings = GitSettings(root, root / ".git")
    settings.refresh()
    assert settings.flag("hystate.groupcommit", default=False)
    settings.refresh()
    assert settings.flag("hystate.groupcommit", default=False)
    rewrite_elsewhere(root / ".git" / "config", b"= true", b"= off ")
    settings.refresh()
    assert not settings.flag("hystate.groupcommit", default=True)


def test_a_config_just_changed_is_read_at_every_refresh(tmp_path: Path) -> None:
    """Real clock: the config was written a moment ago, so it is not trusted by its stamp
    (a change in the same clock tick would leave the same one)."""
    root = tmp_path / "r"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.name", "aaaa")
    settings = GitSettings(root, root / ".git")
    settings.refresh()
    assert settings.get("user.name") == "aaaa"
    config = root / ".git" / "config"
    st = os.stat(config)
    config.write_bytes(config.read_bytes().replace(b"aaaa", b"bbbb"))
    os.utime(config, ns=(st.st_atime_ns, st.st_mtime_ns))
    settings.refresh()
    assert settings.get("user.name") == "bbbb"


def test_a_config_file_made_while_git_reads_is_not_handed_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``git config --list`` that read a file made after the files were stamped (missing
    then) is not handed to a warm server's next commands: once that file is gone again, the
    stamps would be the same and its settings believed."""
    root = tmp_path / "r"
    root.mkdir()
    git(root, "init", "-q")
    monkeypatch.delenv("GIT_CONFIG_GLOBAL")
    monkeypatch.setattr(settings, "READ", {})
    made = Path(os.environ["HOME"]) / ".gitconfig"
    time.sleep(filestamp.RACY_NS / 1e9 + 0.1)  # every file settled: what is read is handed on

    class Racing(GitSettings):
        def _list(self) -> dict[str, str]:
            made.write_text("[user]\n\tname = Briefly\n")  # made as git is started
            return super()._list()

    assert Racing(root, root / ".git").get("user.name") == "Briefly"
    assert settings.READ == {}
    made.unlink()
    assert GitSettings(root, root / ".git").get("user.name") is None
    assert [values.get("user.name") for values in settings.READ.values()] == [None]


def test_a_fifo_for_head_is_a_broken_head_not_a_hang(tmp_path: Path) -> None:
    """HEAD replaced by a FIFO (nobody writing it): read as an empty HEAD, an error, where
    an open would wait for a writer for ever (a warm server reads HEADs between requests)."""
    root = tmp_path / "r"
    root.mkdir()
    git(root, "init", "-q")
    (root / ".git" / "HEAD").unlink()
    os.mkfifo(root / ".git" / "HEAD")
    code = (
        "import sys; from pathlib import Path; from hystate.core.errors import GitError;"
        " from hystate.git.refs import Refs\n"
        "try:\n    Refs(Path(sys.argv[1]), Path(sys.argv[1])).head()\n"
        "except GitError as exc:\n    print('refused:', exc)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(root / ".git")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("refused:"), done.stdout
