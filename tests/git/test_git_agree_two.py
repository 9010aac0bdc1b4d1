"""Regression tests for issue 25 ("agree with git, round two"): one or more per class, each
failing on the code before the issue. Real git repositories in ``tmp_path``, the real
``hystate`` command in its own process, a person's git as a real ``git`` process. Where the
issue leaves the choice open ("lands as hystate's own commit or visibly not at all", "follow
git or refuse in one line") a test accepts exactly those outcomes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from hystate.manager import StateManager
from tests.conftest import HYSTATE, catalog_rows, git, write_search_json

USER = ("-c", "user.name=Person", "-c", "user.email=person@example.org")


def hy(
    cwd: Path, *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **(env or {})}
    return subprocess.run(
        [*HYSTATE, *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip


def start_hy(cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*HYSTATE, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def setup_state(root: Path, episodes: int = 3, *init_args: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", "main", *init_args)
    done = hy(root, "init")
    assert done.returncode == 0, done.stderr
    if episodes:
        catalog = write_search_json(root.parent / "catalog.json", catalog_rows(episodes))
        done = hy(root, "discover", "--from", str(catalog))
        assert done.returncode == 0, done.stderr
    return root


def first_episode(root: Path) -> tuple[str, str]:
    rels = sorted(
        p for p in git(root, "ls-files", "-z", "processed").split("\0") if p.endswith(".yaml")
    )
    return Path(rels[0]).stem, rels[0]


def head(root: Path) -> str:
    return git(root, "rev-parse", "HEAD").strip()


def one_line_refusal(done: subprocess.CompletedProcess[str], code: int = 7) -> None:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr


def index_tells_the_truth(root: Path, rel: str) -> None:
    """git's stat data never vouches for content the file does not hold: when the index
    entry's blob differs from what `git add` would store, `git status` says so."""
    staged = git(root, "ls-files", "-s", "--", rel).split()
    on_disk = git(root, "hash-object", "--", rel).strip()
    status = git(root, "status", "--porcelain", "--", rel)
    if staged and staged[1] != on_disk:
        assert status.strip(), f"{rel}: index has {staged[1]}, file is {on_disk}, status clean"


def trailers(root: Path, rev: str = "HEAD") -> str:
    return git(root, "log", "-1", "--format=%(trailers:key=Hystate-Episode,valueonly)", rev)


# -- the window between writing the episode file and taking the repository lock -------------


def _wait_for_write(path: Path, before: bytes, worker: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while path.read_bytes() == before:
        assert worker.poll() is None, worker.communicate()
        assert time.monotonic() < deadline, "the worker never wrote the file"
        time.sleep(0.01)


@pytest.mark.parametrize(
    "person", ["stash", "restore", "checkout", "commit-a", "commit-a-no-verify", "add"]
)
def test_a_person_in_the_window_before_the_repository_lock(tmp_path: Path, person: str) -> None:
    """A worker has written the episode file and waits for the repository lock; a person's
    git command in that window; the transition lands as hystate's own commit or visibly not at
    all, and git's index never vouches for content the file does not hold."""
    root = setup_state(tmp_path / "r")
    eid, rel = first_episode(root)
    path = root / rel
    old, before = path.read_bytes(), head(root)
    holder = StateManager(cwd=root)
    with holder.repo_lock():
        worker = start_hy(root, "advance", eid, "downloading")
        _wait_for_write(path, old, worker)
        new = path.read_bytes()
        if person == "stash":
            git(root, *USER, "stash", "push", "-q")
        elif person == "restore":
            git(root, "restore", "--", rel)
        elif person == "checkout":
            git(root, "checkout", "--", rel)
        elif person == "add":
            git(root, "add", "--", rel)
        else:
            verify = ["--no-verify"] if person.endswith("no-verify") else []
            git(root, *USER, "commit", "-q", "-a", *verify, "-m", "person -a", check=False)
    out, err = worker.communicate(timeout=300)

    index_tells_the_truth(root, rel)
    if worker.returncode == 0:  # landed: as hystate's own commit, file and HEAD agree
        assert trailers(root).strip() == eid, "the transition is in a commit not hystate's"
        assert git(root, "show", f"HEAD:{rel}").encode() == new
        assert path.read_bytes() == new
        assert git(root, "status", "--porcelain", "--", rel) == ""
    else:  # visibly not at all
        assert worker.returncode == 7, (worker.returncode, out, err)
        assert len(err.strip().splitlines()) == 1, err
        assert not trailers(root).strip() or head(root) == before
        shown = hy(root, "show", eid, "--json")
        if not person.startswith("commit-a"):
            assert head(root) == before
            assert '"stage": "discovered"' in shown.stdout
    if person == "stash":
        git(root, *USER, "stash", "pop", "-q", check=False)
        index_tells_the_truth(root, rel)


def test_the_pre_commit_guard_refuses_a_commit_of_a_transition_in_flight(
    tmp_path: Path,
) -> None:
    """`git commit -a` in the window, with the hook `hystate init` installs: refused, and the
    transition then lands as hystate's own commit."""
    root = setup_state(tmp_path / "r")
    eid, rel = first_episode(root)
    path = root / rel
    old = path.read_bytes()
    holder = StateManager(cwd=root)
    with holder.repo_lock():
        worker = start_hy(root, "advance", eid, "downloading")
        _wait_for_write(path, old, worker)
        person = subprocess.run(
            ["git", *USER, "commit", "-q", "-a", "-m", "person -a"],
            cwd=root, capture_output=True, text=True, check=False,
        )  # fmt: skip
    _, err = worker.communicate(timeout=300)
    assert person.returncode != 0, person.stderr
    assert "hystate is committing a transition" in person.stdout + person.stderr
    assert worker.returncode == 0, err
    assert trailers(root).strip() == eid
    assert git(root, "status", "--porcelain") == ""


def test_fsck_compares_index_blobs_with_the_files_content(tmp_path: Path) -> None:
    """An index entry whose stat data matches a file of other content (what the window left
    before): `git status` is clean, fsck is not fooled."""
    root = setup_state(tmp_path / "r")
    git(root, "config", "core.trustctime", "false")
    _, rel = first_episode(root)
    path = root / rel
    data = path.read_bytes()
    old = time.time_ns() - 60 * 10**9  # older than the index: not a racy entry
    os.utime(path, ns=(old, old))
    git(root, "update-index", "-q", "--refresh")  # the entry records that stat data
    changed = data.replace(b"title: ", b"title: X", 1)[: len(data)]
    assert len(changed) == len(data) and changed != data
    with open(path, "r+b") as fh:  # same inode, same size, same mtime: only the content differs
        fh.write(changed)
    os.utime(path, ns=(old, old))
    assert git(root, "status", "--porcelain") == "", "set-up: git must be fooled by stat data"

    found = hy(root, "fsck")
    assert found.returncode == 1, found.stdout + found.stderr
    assert rel in found.stdout + found.stderr

    repaired = hy(root, "fsck", "--repair")
    assert repaired.returncode in (0, 1), repaired.stderr
    index_tells_the_truth(root, rel)
    again = hy(root, "fsck")
    assert again.returncode == 0, again.stdout + again.stderr
    assert git(root, "status", "--porcelain") == ""


# -- git's environment ------------------------------------------------------------------------


def test_git_dir_and_work_tree_from_the_environment(tmp_path: Path) -> None:
    """Run in repository A with GIT_DIR/GIT_WORK_TREE naming B: git works on B; so does
    hystate (or it refuses in one line), never on A."""
    a = setup_state(tmp_path / "a" / "r")
    b = setup_state(tmp_path / "b" / "r")
    eid, _ = first_episode(b)
    before_a, before_b = head(a), head(b)
    env = {"GIT_DIR": str(b / ".git"), "GIT_WORK_TREE": str(b)}

    done = hy(a, "advance", eid, "downloading", env=env)

    assert head(a) == before_a, "hystate committed into another repository than git would"
    if done.returncode == 0:
        assert head(b) != before_b and trailers(b).strip() == eid
        assert git(b, "status", "--porcelain") == ""
    else:
        one_line_refusal(done)


def test_relative_git_dir_from_a_sub_folder(tmp_path: Path) -> None:
    b = setup_state(tmp_path / "b")
    eid, _ = first_episode(b)
    other = tmp_path / "elsewhere" / "deep"
    other.mkdir(parents=True)
    before = head(b)
    done = hy(
        other,
        "advance", eid, "downloading",
        env={"GIT_DIR": "../../b/.git", "GIT_WORK_TREE": "../../b"},
    )  # fmt: skip
    if done.returncode == 0:
        assert head(b) != before and trailers(b).strip() == eid
    else:
        one_line_refusal(done)


def test_git_ceiling_directories_is_honoured(tmp_path: Path) -> None:
    root = setup_state(tmp_path / "r")
    eid, _ = first_episode(root)
    before = head(root)
    sub = root / "processed"
    env = {"GIT_CEILING_DIRECTORIES": str(root)}
    said = subprocess.run(
        ["git", "rev-parse", "--git-dir"], cwd=sub, env={**os.environ, **env},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert said.returncode != 0, "set-up: git must find no repository here"

    done = hy(sub, "advance", eid, "downloading", env=env)

    one_line_refusal(done)
    assert "not in a git repository" in done.stderr
    assert head(root) == before


def test_git_index_file_is_the_index_hystate_updates(tmp_path: Path) -> None:
    root = setup_state(tmp_path / "r")
    eid, _ = first_episode(root)
    alt = root.parent / "alt-index"
    shutil.copy(root / ".git" / "index", alt)
    env = {"GIT_INDEX_FILE": str(alt)}

    done = hy(root, "advance", eid, "downloading", env=env)

    if done.returncode == 0:
        seen = subprocess.run(
            ["git", "status", "--porcelain"], cwd=root, env={**os.environ, **env},
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert seen == "", f"the index git uses (GIT_INDEX_FILE) was not updated: {seen}"
    else:
        one_line_refusal(done)


def test_core_worktree_is_followed(tmp_path: Path) -> None:
    """A git directory whose work tree is elsewhere (core.worktree): git, run in the git
    directory's folder, works on that work tree; so does hystate, or it refuses."""
    meta = tmp_path / "meta"
    work = tmp_path / "work"
    meta.mkdir()
    work.mkdir()
    git(meta, "init", "-q", "-b", "main")
    git(meta, "config", "core.worktree", str(work))
    done = hy(meta, "init")
    if done.returncode != 0:
        one_line_refusal(done)
        return
    assert (work / "processed" / ".gitignore").is_file(), "state made outside git's work tree"
    assert not (meta / "processed").exists()
    assert git(meta, "status", "--porcelain") == ""


def test_init_never_makes_a_repository_inside_a_git_directory(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    inside = root / ".git" / "objects"
    done = hy(inside, "init")
    one_line_refusal(done)
    assert not (inside / ".git").exists()
    assert not (inside / "processed").exists()
    assert not (root / "processed").exists()


def test_init_with_git_dir_naming_nothing_is_refused(tmp_path: Path) -> None:
    here = tmp_path / "r"
    here.mkdir()
    done = hy(here, "init", env={"GIT_DIR": str(tmp_path / "nowhere")})
    one_line_refusal(done)
    assert not (tmp_path / "nowhere").exists()
    assert not (here / ".git").exists()


# -- repositories git refuses -------------------------------------------------------------------


def test_unknown_repository_extension_is_refused(tmp_path: Path) -> None:
    root = setup_state(tmp_path / "r")
    eid, rel = first_episode(root)
    git(root, "config", "core.repositoryFormatVersion", "1")
    git(root, "config", "extensions.hystateTestUnknown", "true")
    assert subprocess.run(["git", "status"], cwd=root, capture_output=True).returncode != 0
    before = (root / ".git" / "refs" / "heads" / "main").read_text()
    data = (root / rel).read_bytes()

    done = hy(root, "advance", eid, "downloading")

    one_line_refusal(done)
    assert (root / ".git" / "refs" / "heads" / "main").read_text() == before
    assert (root / rel).read_bytes() == data


def test_repository_of_another_user_is_refused(tmp_path: Path) -> None:
    """safe.directory: git refuses a repository owned by another user; so does hystate."""
    root = setup_state(tmp_path / "r")
    eid, rel = first_episode(root)
    before = (root / ".git" / "refs" / "heads" / "main").read_text()
    data = (root / rel).read_bytes()
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(folder, name), os.getuid() + 4242, -1)
    os.chown(root, os.getuid() + 4242, -1)
    said = subprocess.run(["git", "status"], cwd=root, capture_output=True, text=True)
    assert "dubious ownership" in said.stderr, "set-up: git must refuse this repository"

    done = hy(root, "advance", eid, "downloading")

    one_line_refusal(done)
    assert "safe.directory" in done.stderr
    assert (root / ".git" / "refs" / "heads" / "main").read_text() == before
    assert (root / rel).read_bytes() == data


# -- shared repositories ------------------------------------------------------------------------


def _member(uid: int, gid: int) -> None:
    os.setgroups([gid])
    os.setgid(gid)
    os.setuid(uid)


def test_shared_repository_group_lets_another_member_commit(tmp_path: Path) -> None:
    """core.sharedRepository=group: what hystate makes in .git gets git's permissions, so
    another member of the group can still commit."""
    gid, uid = 4343, 4344
    base = Path(tempfile.mkdtemp(prefix="hystate-shared-"))  # a member can reach it
    try:
        _shared_repository(base, gid, uid)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _shared_repository(tmp_path: Path, gid: int, uid: int) -> None:
    root = tmp_path / "r"
    root.mkdir()
    git(root, "init", "-q", "-b", "main", "--shared=group")
    os.chown(root, -1, gid)
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(folder, name), -1, gid)
    tmp_path.chmod(0o755)
    root.chmod(0o2777)
    done = hy(root, "init")
    assert done.returncode == 0, done.stderr
    catalog = write_search_json(tmp_path / "catalog.json", catalog_rows(5))
    assert hy(root, "discover", "--from", str(catalog)).returncode == 0
    eid, _ = first_episode(root)
    assert hy(root, "advance", eid, "downloading").returncode == 0
    for folder, dirs, files in os.walk(root / ".git" / "objects"):
        for name in dirs:
            mode = os.stat(os.path.join(folder, name)).st_mode
            assert mode & 0o2070 == 0o2070, f"{folder}/{name}: {oct(mode)}"
        for name in files:
            mode = os.stat(os.path.join(folder, name)).st_mode
            assert mode & 0o040, f"{folder}/{name}: {oct(mode)}"
    for log in (root / ".git" / "logs").rglob("*"):
        if log.is_file():
            assert log.stat().st_mode & 0o060 == 0o060, f"{log}: {oct(log.stat().st_mode)}"

    home = tmp_path / "member-home"
    home.mkdir()
    os.chown(home, uid, gid)
    member = subprocess.run(
        ["git", "-c", f"safe.directory={root}", *USER, "commit", "-q", "--allow-empty",
         "-m", "a member's commit"],
        cwd=root, capture_output=True, text=True, check=False, env={**os.environ, "HOME": str(home)},
        preexec_fn=lambda: _member(uid, gid),
    )  # fmt: skip
    assert member.returncode == 0, member.stderr


# -- a branch that is a symbolic ref --------------------------------------------------------------


def test_a_branch_that_is_a_symbolic_ref_moves_its_target(tmp_path: Path) -> None:
    root = setup_state(tmp_path / "r")
    eid, _ = first_episode(root)
    git(root, "branch", "-m", "main", "trunk")
    git(root, "symbolic-ref", "refs/heads/main", "refs/heads/trunk")
    git(root, "symbolic-ref", "HEAD", "refs/heads/main")
    before = head(root)

    done = hy(root, "advance", eid, "downloading")

    assert done.returncode == 0, done.stderr
    assert git(root, "symbolic-ref", "refs/heads/main").strip() == "refs/heads/trunk"
    assert git(root, "rev-parse", "trunk").strip() != before
    assert trailers(root, "trunk").strip() == eid
    assert git(root, "status", "--porcelain") == ""
    assert git(root, "log", "-1", "--format=%gs", "-g", "trunk").startswith("commit")


# -- hooks git runs for plumbing --------------------------------------------------------------------


@pytest.mark.parametrize("hook", ["reference-transaction", "post-index-change"])
def test_plumbing_hooks_run_or_are_named(tmp_path: Path, hook: str) -> None:
    root = setup_state(tmp_path / "r")
    eid, _ = first_episode(root)
    marker = tmp_path / "ran"
    path = root / ".git" / "hooks" / hook
    path.write_text(f"#!/bin/sh\ncat >/dev/null\ntouch '{marker}'\nexit 0\n")
    path.chmod(0o755)
    marker.unlink(missing_ok=True)

    done = hy(root, "advance", eid, "downloading")

    assert done.returncode == 0, done.stderr
    assert marker.exists() or hook in done.stderr, f"{hook} neither run nor named"


def _ref_hook_log(log: Path) -> list[tuple[str, list[str]]]:
    """(state, ref names) per reference-transaction hook call the log recorded."""
    calls = []
    for block in log.read_text().split("--\n"):
        lines = block.strip().splitlines()
        if lines:
            calls.append((lines[0], [line.split()[2] for line in lines[1:]]))
    return calls


def test_reference_transaction_hook_sees_what_git_shows_it(tmp_path: Path) -> None:
    """git runs reference-transaction for every ref update; hystate runs it the same way (same
    states, same refs, in order), and a hook refusing the prepared update refuses the
    transition."""
    root = setup_state(tmp_path / "r")
    eid, rel = first_episode(root)
    log = tmp_path / "ref-hook.log"
    hook = root / ".git" / "hooks" / "reference-transaction"
    hook.write_text(f"#!/bin/sh\n{{ echo \"$1\"; cat; echo --; }} >> '{log}'\n")
    hook.chmod(0o755)
    (root / "person.txt").write_text("a person's file\n")
    git(root, "add", "person.txt")
    git(root, *USER, "commit", "-q", "-m", "a person's commit")
    by_git = _ref_hook_log(log)
    log.unlink()

    done = hy(root, "advance", eid, "downloading", "--json")

    assert done.returncode == 0, done.stderr
    assert _ref_hook_log(log) == by_git
    assert by_git == [(s, ["HEAD", "refs/heads/main"]) for s in ("prepared", "committed")]

    hook.write_text('#!/bin/sh\ncat >/dev/null\n[ "$1" = prepared ] && exit 1\nexit 0\n')
    before, data = head(root), (root / rel).read_bytes()
    lease = json.loads(done.stdout)["lease"]
    done = hy(
        root, "advance", eid, "downloaded", "--set", "files.audio_file=a.mp3", "--lease", lease
    )
    one_line_refusal(done)
    assert head(root) == before and (root / rel).read_bytes() == data
    assert git(root, "status", "--porcelain") == ""


# -- audit reads a person's config cannot bend ---------------------------------------------------


@pytest.mark.parametrize(
    "setting",
    [
        ("log.showSignature", "true"),
        ("trailer.separators", "#"),
        ("core.commentChar", "H"),
        ("grep.patternType", "fixed"),
        ("log.follow", "true"),
        ("i18n.logOutputEncoding", "ISO-8859-1"),
    ],
    ids=lambda s: s[0],
)
def test_audit_reads_are_pinned(tmp_path: Path, setting: tuple[str, str]) -> None:
    root = setup_state(tmp_path / "r")
    eid, _ = first_episode(root)
    key = tmp_path / "signing-key"  # signed commits: log.showSignature has text to show
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    git(root, "config", "gpg.format", "ssh")
    git(root, "config", "user.signingKey", str(key))
    git(root, "config", "commit.gpgSign", "true")
    done = hy(root, "advance", eid, "downloading", "-m", "café at the wörks")
    assert done.returncode == 0, done.stderr
    plain = hy(root, "history", eid, "--json")
    assert plain.returncode == 0, plain.stderr
    plain_validate = hy(root, "validate", "--base", "HEAD~2")
    git(root, "config", *setting)

    bent = hy(root, "history", eid, "--json")
    validated = hy(root, "validate", "--base", "HEAD~2")

    assert bent.returncode == 0, bent.stderr
    assert bent.stdout == plain.stdout, f"{setting} changed what hystate reads back"
    assert validated.returncode == plain_validate.returncode, validated.stdout + validated.stderr
    assert validated.stdout == plain_validate.stdout


# -- skip-worktree, excludes, detached HEAD ------------------------------------------------------


def test_skip_worktree_on_an_episode_file(tmp_path: Path) -> None:
    root = setup_state(tmp_path / "r")
    eid, rel = first_episode(root)
    git(root, "update-index", "--skip-worktree", "--", rel)
    before, data = head(root), (root / rel).read_bytes()

    done = hy(root, "advance", eid, "downloading")

    if done.returncode == 0:
        staged = git(root, "ls-files", "-s", "--", rel).split()[1]
        assert staged == git(root, "rev-parse", f"HEAD:{rel}").strip(), "a staged revert"
    else:
        one_line_refusal(done)
        assert head(root) == before
        assert (root / rel).read_bytes() == data


def test_global_excludes_do_not_hide_a_leftover_from_fsck(tmp_path: Path) -> None:
    root = setup_state(tmp_path / "r")
    excludes = tmp_path / "global-excludes"
    excludes.write_text("*.yaml\n")
    git(root, "config", "core.excludesFile", str(excludes))
    leftover = root / "processed" / "2004" / "hy0_left_over_2004-02-02.yaml"
    source = root / first_episode(root)[1]
    text = source.read_text().replace(source.stem, leftover.stem)
    leftover.write_text(text)
    assert git(root, "status", "--porcelain") == "", "set-up: git must hide the leftover"

    found = hy(root, "fsck")

    assert found.returncode == 1, found.stdout + found.stderr
    assert leftover.name in found.stdout + found.stderr


def test_detached_head_is_refused_unless_opted_in(tmp_path: Path) -> None:
    root = setup_state(tmp_path / "r")
    eid, rel = first_episode(root)
    git(root, "checkout", "-q", "--detach")
    before, data = head(root), (root / rel).read_bytes()

    done = hy(root, "advance", eid, "downloading")

    one_line_refusal(done)
    assert "detached" in done.stderr
    assert head(root) == before and (root / rel).read_bytes() == data
    assert git(root, "status", "--porcelain") == ""

    git(root, "config", "hystate.allowDetachedHead", "true")
    done = hy(root, "advance", eid, "downloading")
    assert done.returncode == 0, done.stderr
    assert trailers(root).strip() == eid
