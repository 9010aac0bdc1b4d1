"""Regression tests for issue 10: each reproduction of "hystate disagrees with git" as a test.

Every test runs real git on a real repository in ``tmp_path`` and, where the exit code matters,
the real ``hystate`` command in its own process. Where the issue leaves the choice open
("honour it or refuse it clearly, never silently"), the test accepts exactly those two outcomes:
the setting took effect, or the command failed with exit 7 and left HEAD and the file as they
were.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from hystate.manager import StateManager
from tests.conftest import HYSTATE, catalog_rows, commits, git, write_search_json

USER = ("-c", "user.name=Person", "-c", "user.email=person@example.org")


def hy(
    cwd: Path, *args: str, env: Mapping[str, str] | None = None, preexec: object = None
) -> subprocess.CompletedProcess[str]:
    """The real ``hystate`` command in its own process (environment = the test's + ``env``)."""
    full = dict(os.environ)
    full.update(env or {})
    return subprocess.run(
        [*HYSTATE, *args],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        preexec_fn=preexec,  # type: ignore[arg-type]
    )


def new_repo(root: Path, *init_args: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", "main", *init_args)
    return root


def setup_state(root: Path, episodes: int = 0) -> Path:
    """``hystate init`` (and ``discover`` of ``episodes`` episodes) in a new repository."""
    new_repo(root)
    done = hy(root, "init")
    assert done.returncode == 0, done.stderr
    if episodes:
        catalog = write_search_json(root.parent / "catalog.json", catalog_rows(episodes))
        done = hy(root, "discover", "--from", str(catalog))
        assert done.returncode == 0, done.stderr
    return root


def state_files(root: Path) -> list[str]:
    return sorted(
        p for p in git(root, "ls-files", "-z", "processed").split("\0") if p.endswith(".yaml")
    )


def head(root: Path) -> str:
    return git(root, "rev-parse", "HEAD").strip()


def git_add_would_store(root: Path, rel: str) -> str:
    """The blob `git add` makes of the work-tree file (filters, eol, ident, encoding)."""
    return git(root, "hash-object", f"--path={rel}", "--", rel).strip()


def assert_git_agrees(root: Path, rel: str) -> None:
    """HEAD, the index and the work tree agree on ``rel``, as git itself sees them."""
    in_head = git(root, "rev-parse", f"HEAD:{rel}").strip()
    mode_head = git(root, "ls-tree", "HEAD", "--", rel).split()[0]
    staged = git(root, "ls-files", "-s", "--", rel).split()
    assert staged[:2] == [mode_head, in_head], f"index {staged} != HEAD {mode_head} {in_head}"
    assert git_add_would_store(root, rel) == in_head, "HEAD's blob is not what `git add` stores"
    git(root, "update-index", "-q", "--really-refresh", check=False)
    assert git(root, "status", "--porcelain", "--", rel) == ""


def assert_refused_cleanly(root: Path, done: subprocess.CompletedProcess[str], before: str) -> None:
    assert done.returncode == 7, (done.returncode, done.stdout, done.stderr)
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert head(root) == before


# -- data loss or corruption -------------------------------------------------------------------


def test_index_entry_lookup_is_exact_not_a_suffix_match(tmp_path: Path) -> None:
    """A tracked file whose path ends like the episode's path (after a folder name ending in a
    non-ASCII letter, so the bytes before the suffix look like entry flags) must not be the
    entry hystate patches."""
    root = setup_state(tmp_path / "r")
    eid = "hy0_hooting_yard_2004-01-01"  # 27 characters: "processed/2004/<id>.yaml" is 47 long
    rel = f"processed/2004/{eid}.yaml"
    assert len(rel.encode()) == ord("/")
    done = hy(root, "add", eid, "--title", "T", "--date", "2004-01-01")
    assert done.returncode == 0, done.stderr
    decoy = root / "abcdeÀ" / rel  # "abcdeÀ/" is 8 bytes, ending in 0x80 0x2f
    decoy.parent.mkdir(parents=True)
    decoy.write_text("a user's own file\n")
    git(root, "add", "--", str(decoy.relative_to(root)))
    git(root, *USER, "commit", "-qm", "user file")

    done = hy(root, "advance", eid, "downloading")

    assert done.returncode == 0, done.stderr
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, check=False
    )
    assert status.returncode == 0, status.stderr
    assert status.stdout == ""
    assert git(root, "fsck", "--strict", "--no-progress") == ""
    assert_git_agrees(root, rel)
    assert git(root, "show", f"HEAD:abcdeÀ/{rel}") == "a user's own file\n"


def _same_second_start() -> None:
    """Sleep to just after the start of a second, so the next few steps share it."""
    time.sleep(1.02 - time.time() % 1)


def _racy_edit(root: Path) -> None:
    """``git add`` of v1 and an edit to v2 (same size) in the same second; then a new second."""
    for _ in range(5):
        _same_second_start()
        start = int(time.time())
        (root / "notes.txt").write_text("v1\n")
        git(root, "add", "notes.txt")
        (root / "notes.txt").write_text("v2\n")
        if int(time.time()) == start:
            time.sleep(1.05 - time.time() % 1)  # hystate writes the index in a later second
            return
    pytest.fail("could not make a same-second edit in 5 tries")


@pytest.mark.parametrize("then", ["stash", "commit-a"])
def test_racy_same_second_edit_survives_a_transition(tmp_path: Path, then: str) -> None:
    root = setup_state(tmp_path / "r", episodes=3)
    eid = Path(state_files(root)[0]).stem
    manager = StateManager(cwd=root, worker="w")
    _racy_edit(root)

    manager.update_state(eid, "downloading")

    if then == "stash":
        git(root, *USER, "stash", "-q")
        git(root, *USER, "stash", "pop", "-q")
        assert (root / "notes.txt").read_text() == "v2\n", "the user's same-second edit is lost"
    else:
        git(root, *USER, "commit", "-qam", "user")
        assert git(root, "show", "HEAD:notes.txt") == "v2\n", "git commit -a committed v1"
        assert git(root, "status", "--porcelain") == ""


def _small_arg_max() -> None:
    import resource

    # ARG_MAX is a quarter of the stack limit, 128 KiB at least: the kernel's own floor.
    resource.setrlimit(resource.RLIMIT_STACK, (512 * 1024, resource.RLIM_INFINITY))


def test_discover_of_more_paths_than_fit_in_argv(tmp_path: Path) -> None:
    """The 100,000-episode discover failed with "Argument list too long" after HEAD moved. The
    same limit is reached here with 1,200 long ids under a 128 KiB ARG_MAX (a stack limit of
    512 KiB, set for the hystate process and inherited by the git it runs)."""
    root = setup_state(tmp_path / "r")
    rows = [
        {
            "identifier": f"hy0_{'x' * 100}_{i:05d}",
            "title": f"Episode {i}",
            "date": f"{2004 + i % 16}-01-01T00:00:00Z",
        }
        for i in range(1200)
    ]
    assert sum(len(r["identifier"]) + 25 for r in rows) > 128 * 1024
    catalog = write_search_json(tmp_path / "big.json", rows)
    before = head(root)

    done = hy(root, "discover", "--from", str(catalog), preexec=_small_arg_max)

    assert done.returncode == 0, done.stderr
    assert commits(root)[1] == before
    assert len(state_files(root)) == 1200
    assert git(root, "status", "--porcelain") == ""
    assert git(root, "diff", "--cached", "--name-only") == ""


def _lock_flapper(git_dir: Path, stop: threading.Event) -> None:
    """Another git process, over and over: take index.lock (O_EXCL), hold it 40 ms, drop it."""
    lock = git_dir / "index.lock"
    while not stop.is_set():
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            time.sleep(0.0005)
            continue
        time.sleep(0.04)
        os.close(fd)
        os.unlink(lock)
        time.sleep(0.0005)


def test_busy_index_lock_never_reports_a_committed_transition_as_failed(tmp_path: Path) -> None:
    """Index v4 sends every update through ``git update-index``. With another process taking
    index.lock again and again, each transition either succeeds (exit 0, committed, index =
    HEAD) or fails with HEAD untouched: exit 7 with the transition in HEAD is a lie the user
    acts on, and `MM` lets their next `git commit` revert it."""
    root = setup_state(tmp_path / "r", episodes=6)
    git(root, "config", "index.version", "4")
    git(root, "update-index", "--index-version", "4")
    ids = [Path(p).stem for p in state_files(root)]
    stop = threading.Event()
    flapper = threading.Thread(target=_lock_flapper, args=(root / ".git", stop), daemon=True)
    flapper.start()
    outcomes = []
    try:
        for eid in ids:
            before = head(root)
            done = hy(root, "advance", eid, "downloading")
            rel = next(p for p in state_files(root) if eid in p)
            in_head = "stage: downloading" in git(root, "show", f"HEAD:{rel}")
            outcomes.append((eid, done.returncode, in_head, head(root) != before, done.stderr))
    finally:
        stop.set()
        flapper.join()
    lies = [o for o in outcomes if o[1] != 0 and (o[2] or o[3])]
    assert not lies, f"reported failed but committed: {lies}"
    assert all(o[1] in (0, 6, 7) for o in outcomes), outcomes
    for eid, code, in_head, _, _ in outcomes:
        rel = next(p for p in state_files(root) if eid in p)
        assert in_head == (code == 0)
        assert_git_agrees(root, rel)
    assert git(root, "status", "--porcelain") == ""


def test_discover_after_sparse_checkout_keeps_episodes_outside_the_cone(tmp_path: Path) -> None:
    root = setup_state(tmp_path / "r", episodes=32)
    git(root, "sparse-checkout", "set", "--cone", "processed/2005")
    outside = [p for p in state_files(root) if not p.startswith("processed/2005/")]
    assert outside and not (root / outside[0]).exists()
    blobs = {p: git(root, "rev-parse", f"HEAD:{p}").strip() for p in outside}
    catalog = root.parent / "catalog.json"

    done = hy(root, "discover", "--from", str(catalog))

    assert done.returncode in (0, 7), done.stderr
    after = {p: git(root, "rev-parse", f"HEAD:{p}").strip() for p in outside}
    assert after == blobs, "episodes outside the sparse cone were re-created in HEAD"
    assert git(root, "status", "--porcelain") == ""


def test_sha256_repository_is_supported_or_refused(tmp_path: Path) -> None:
    root = new_repo(tmp_path / "r", "--object-format=sha256")
    init = hy(root, "init")
    add = (
        hy(root, "add", "ep1", "--title", "T", "--date", "2004-01-01")
        if not init.returncode
        else init
    )
    fsck = subprocess.run(
        ["git", "fsck", "--strict", "--no-progress"],
        cwd=root, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert fsck.returncode == 0, f"the repository is broken: {fsck.stdout}{fsck.stderr}"
    if init.returncode == 0 and add.returncode == 0:
        assert len(head(root)) == 64
        assert git(root, "status", "--porcelain") == ""
        assert_git_agrees(root, "processed/2004/ep1.yaml")
    else:
        failed = init if init.returncode else add
        assert failed.returncode == 7, failed.stderr
        assert "sha256" in failed.stderr.lower() or "sha-256" in failed.stderr.lower()
        assert commits(root) == []


# -- git disagrees with itself right after a success -----------------------------------------


def _attributes(root: Path, line: str) -> None:
    (root / ".gitattributes").write_text(line + "\n")
    git(root, "add", ".gitattributes")
    git(root, *USER, "commit", "-qm", "attributes")


def _success_or_refusal(root: Path, args: list[str], rel: str) -> None:
    before = head(root)
    wt_before = (root / rel).read_bytes() if (root / rel).exists() else None
    done = hy(root, *args)
    if done.returncode == 0:
        assert_git_agrees(root, rel)
        assert git(root, "status", "--porcelain") == ""
    else:
        assert_refused_cleanly(root, done, before)
        now = (root / rel).read_bytes() if (root / rel).exists() else None
        assert now == wt_before


@pytest.mark.parametrize("where", [".gitattributes", ".git/info/attributes"])
def test_clean_smudge_filter_on_state_files(tmp_path: Path, where: str) -> None:
    """A real filter pair: clean tags the episode_id line with a comment, smudge removes it;
    set in the tracked .gitattributes, or in .git/info/attributes (which outranks every
    .gitattributes file)."""
    root = new_repo(tmp_path / "r")
    git(root, "config", "filter.tag.clean", r"sed -e 's/^\(episode_id: .*\)$/\1 # tagged/'")
    git(root, "config", "filter.tag.smudge", r"sed -e 's/ # tagged$//'")
    git(root, "config", "filter.tag.required", "true")
    if where == ".gitattributes":
        _attributes(root, "*.yaml filter=tag")
    else:
        (root / ".git" / "info").mkdir(exist_ok=True)
        (root / ".git" / "info" / "attributes").write_text("*.yaml filter=tag\n")
    assert hy(root, "init").returncode == 0
    rel = "processed/2004/ep1.yaml"
    _success_or_refusal(root, ["add", "ep1", "--title", "T", "--date", "2004-01-01"], rel)
    if (root / rel).exists() and git(root, "ls-files", rel):
        _success_or_refusal(root, ["advance", "ep1", "downloading"], rel)


def test_a_filter_that_changes_the_state_is_refused_not_committed(tmp_path: Path) -> None:
    """Found by the adversarial run: a clean filter in .git/info/attributes rewrote
    ``stage: downloading`` in HEAD's blob while the work tree stayed valid, so HEAD held a
    state no schema accepts. A conversion that changes an episode file is refused."""
    root = setup_state(tmp_path / "r", episodes=1)
    rel = state_files(root)[0]
    eid = Path(rel).stem
    git(root, "config", "filter.up.clean", "sed s/downloading/DOWNLOADING/")
    git(root, "config", "filter.up.smudge", "cat")
    (root / ".git" / "info").mkdir(exist_ok=True)
    (root / ".git" / "info" / "attributes").write_text("*.yaml filter=up\n")
    before, data = head(root), (root / rel).read_bytes()
    done = hy(root, "advance", eid, "downloading")
    assert_refused_cleanly(root, done, before)
    assert "filter" in done.stderr
    assert (root / rel).read_bytes() == data
    assert "DOWNLOADING" not in git(root, "log", "-p", "--all")


def test_ident_attribute_on_state_files(tmp_path: Path) -> None:
    root = new_repo(tmp_path / "r")
    _attributes(root, "*.yaml ident")
    assert hy(root, "init").returncode == 0
    rel = "processed/2004/ep1.yaml"
    args = ["add", "ep1", "--title", "Budget $Id: not a hash $ notes", "--date", "2004-01-01"]
    _success_or_refusal(root, args, rel)
    if git(root, "ls-files", rel):
        _success_or_refusal(root, ["advance", "ep1", "downloading"], rel)


def test_working_tree_encoding_on_state_files(tmp_path: Path) -> None:
    root = new_repo(tmp_path / "r")
    _attributes(root, "*.yaml working-tree-encoding=ISO-8859-1")
    assert hy(root, "init").returncode == 0
    rel = "processed/2004/ep1.yaml"
    _success_or_refusal(root, ["add", "ep1", "--title", "Café Bâton", "--date", "2004-01-01"], rel)
    if git(root, "ls-files", rel):
        _success_or_refusal(root, ["advance", "ep1", "downloading"], rel)


def test_autocrlf_true_in_a_fresh_clone(tmp_path: Path) -> None:
    origin = setup_state(tmp_path / "origin", episodes=3)
    clone = tmp_path / "clone"
    git(tmp_path, "-c", "core.autocrlf=true", "clone", "-q", str(origin), str(clone))
    git(clone, "config", "core.autocrlf", "true")
    rel = state_files(clone)[0]
    eid = Path(rel).stem

    done = hy(clone, "advance", eid, "downloading")

    assert done.returncode == 0, done.stderr
    assert "stage: downloading" in git(clone, "show", f"HEAD:{rel}")
    assert "\r" not in git(clone, "show", f"HEAD:{rel}")
    assert_git_agrees(clone, rel)
    assert git(clone, "status", "--porcelain") == ""
    fsck = hy(clone, "fsck")
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr


def test_executable_state_file_mode_agrees_between_head_and_index(tmp_path: Path) -> None:
    root = setup_state(tmp_path / "r", episodes=3)
    rel = state_files(root)[0]
    (root / rel).chmod(0o755)
    git(root, "add", rel)
    git(root, *USER, "commit", "-qm", "chmod +x")
    assert git(root, "ls-tree", "HEAD", rel).split()[0] == "100755"

    done = hy(root, "advance", Path(rel).stem, "downloading")

    assert done.returncode == 0, done.stderr
    assert_git_agrees(root, rel)
    assert git(root, "status", "--porcelain") == ""


# -- git settings: honoured or refused, never silently ignored -------------------------------


@pytest.fixture
def one(tmp_path: Path) -> tuple[Path, str, str]:
    """(repo, episode id, its path) with three discovered episodes."""
    root = setup_state(tmp_path / "r", episodes=3)
    rel = state_files(root)[0]
    return root, Path(rel).stem, rel


def test_failing_pre_commit_hook_is_honoured_or_named(one: tuple[Path, str, str]) -> None:
    root, eid, rel = one
    hook = root / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\necho 'pre-commit: no commits today' >&2\nexit 1\n")
    hook.chmod(0o755)
    before, data = head(root), (root / rel).read_bytes()

    done = hy(root, "advance", eid, "downloading")

    if done.returncode == 0:
        assert "hook" in done.stderr.lower(), "the pre-commit hook was skipped silently"
    else:
        assert_refused_cleanly(root, done, before)
        assert (root / rel).read_bytes() == data


def test_commit_msg_hook_runs_or_is_named(one: tuple[Path, str, str]) -> None:
    root, eid, _ = one
    marker = root.parent / "commit-msg-ran"
    hook = root / ".git" / "hooks" / "commit-msg"
    hook.write_text(f"#!/bin/sh\ntouch '{marker}'\nexit 0\n")
    hook.chmod(0o755)

    done = hy(root, "advance", eid, "downloading")

    assert done.returncode in (0, 7), done.stderr
    assert marker.exists() or "hook" in done.stderr.lower(), "commit-msg hook skipped silently"


def test_gpgsign_without_a_key_signs_or_refuses(one: tuple[Path, str, str]) -> None:
    root, eid, rel = one
    git(root, "config", "commit.gpgSign", "true")
    before, data = head(root), (root / rel).read_bytes()

    done = hy(root, "advance", eid, "downloading")

    if done.returncode == 0:
        assert "gpgsig" in git(root, "cat-file", "commit", "HEAD"), "commit.gpgSign ignored"
    else:
        assert_refused_cleanly(root, done, before)
        assert (root / rel).read_bytes() == data
        assert git(root, "status", "--porcelain") == ""


def test_use_config_only_without_identity_is_refused(one: tuple[Path, str, str]) -> None:
    root, eid, rel = one
    git(root, "config", "user.useConfigOnly", "true")
    before, data = head(root), (root / rel).read_bytes()

    done = hy(root, "advance", eid, "downloading")

    assert_refused_cleanly(root, done, before)
    assert (root / rel).read_bytes() == data
    assert git(root, "status", "--porcelain") == ""


def test_author_and_committer_config_are_used(one: tuple[Path, str, str]) -> None:
    root, eid, _ = one
    for key, value in {
        "user.name": "User",
        "user.email": "user@example.org",
        "author.name": "Author",
        "author.email": "author@example.org",
        "committer.name": "Committer",
        "committer.email": "committer@example.org",
    }.items():
        git(root, "config", key, value)

    done = hy(root, "advance", eid, "downloading")

    assert done.returncode == 0, done.stderr
    assert git(root, "log", "-1", "--format=%an <%ae>|%cn <%ce>").strip() == (
        "Author <author@example.org>|Committer <committer@example.org>"
    )


def test_git_author_and_committer_dates_are_used(one: tuple[Path, str, str]) -> None:
    root, eid, _ = one
    env = {
        "GIT_AUTHOR_DATE": "2005-04-07T22:13:13+02:00",
        "GIT_COMMITTER_DATE": "2006-01-02T03:04:05-07:00",
    }
    done = hy(root, "advance", eid, "downloading", env=env)

    assert done.returncode == 0, done.stderr
    assert git(root, "log", "-1", "--format=%ad|%cd", "--date=raw").strip() == (
        "1112904793 +0200|1136196245 -0700"
    )


def test_commit_timezone_is_the_local_one(one: tuple[Path, str, str]) -> None:
    root, eid, _ = one
    env = {"TZ": "XST-05:30"}  # POSIX: 5h30 east of UTC, no tz database needed
    tree = git(root, "rev-parse", "HEAD^{tree}").strip()
    probe = subprocess.run(
        ["git", *USER, "commit-tree", "-m", "probe", tree],
        cwd=root, env={**os.environ, **env}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    git_offset = git(root, "log", "-1", "--format=%ad", "--date=raw", probe.stdout.strip()).split()
    assert git_offset[1] == "+0530"

    done = hy(root, "advance", eid, "downloading", env=env)

    assert done.returncode == 0, done.stderr
    assert git(root, "log", "-1", "--format=%ad|%cd", "--date=format:%z").strip() == ("+0530|+0530")


def test_no_reflog_is_created_when_log_all_ref_updates_is_false(
    one: tuple[Path, str, str],
) -> None:
    root, eid, _ = one
    git(root, "config", "core.logAllRefUpdates", "false")
    logs = root / ".git" / "logs"
    subprocess.run(["rm", "-rf", str(logs)], check=True)

    done = hy(root, "advance", eid, "downloading")

    assert done.returncode == 0, done.stderr
    assert not (logs / "HEAD").exists()
    assert not (logs / "refs" / "heads" / "main").exists()


# -- git states ------------------------------------------------------------------------------


def test_bisect_in_progress_is_refused(one: tuple[Path, str, str]) -> None:
    root, eid, rel = one
    for i in range(3):
        (root / f"f{i}.txt").write_text(f"{i}\n")
        git(root, "add", f"f{i}.txt")
        git(root, *USER, "commit", "-qm", f"f{i}")
    git(root, "bisect", "start", "HEAD", "HEAD~3")
    before, data = head(root), (root / rel).read_bytes()

    done = hy(root, "advance", eid, "downloading")

    assert_refused_cleanly(root, done, before)
    assert "bisect" in done.stderr
    assert (root / rel).read_bytes() == data


def test_sequencer_in_progress_is_refused(one: tuple[Path, str, str]) -> None:
    """A cherry-pick of two commits stopped on a conflict; the person resolved and committed the
    first by hand, so CHERRY_PICK_HEAD is gone but the sequence is still in progress."""
    root, eid, rel = one
    (root / "c.txt").write_text("base\n")
    git(root, "add", "c.txt")
    git(root, *USER, "commit", "-qm", "base")
    git(root, "checkout", "-qb", "side")
    for n in (1, 2):
        (root / "c.txt").write_text(f"side {n}\n")
        git(root, *USER, "commit", "-qam", f"side {n}")
    git(root, "checkout", "-q", "main")
    (root / "c.txt").write_text("main\n")
    git(root, *USER, "commit", "-qam", "main")
    git(root, *USER, "cherry-pick", "side~1", "side", check=False)
    (root / "c.txt").write_text("resolved\n")
    git(root, "add", "c.txt")
    git(root, *USER, "commit", "-q", "--no-edit")
    assert (root / ".git" / "sequencer").is_dir()
    before, data = head(root), (root / rel).read_bytes()

    done = hy(root, "advance", eid, "downloading")

    assert_refused_cleanly(root, done, before)
    assert (root / rel).read_bytes() == data


def test_a_file_named_head_does_not_lose_the_commits_in_the_log(
    one: tuple[Path, str, str],
) -> None:
    root, eid, _ = one
    (root / "HEAD").write_text("a file called HEAD\n")
    done = hy(root, "advance", eid, "downloading")
    assert done.returncode == 0, done.stderr
    sha = head(root)

    log = hy(root, "log", "--json")

    assert log.returncode == 0, log.stderr
    import json

    events = [json.loads(line) for line in log.stdout.splitlines() if line.strip()]
    assert events and all(e["commit"] for e in events), events
    assert any(e["commit"] == sha and e["episode_id"] == eid for e in events)


def test_existing_loose_objects_are_freshened(tmp_path: Path) -> None:
    """git touches an object it would have written but finds present, so a concurrent
    `git gc`/`git prune` (which keeps recent objects) cannot delete it before the commit that
    needs it lands. Here a transition is made, undone with `git reset --hard`, its objects are
    made 30 days old, and the same transition is made again in the same second (same content,
    same blob)."""
    root = setup_state(tmp_path / "r", episodes=3)
    rel = state_files(root)[0]
    eid = Path(rel).stem
    manager = StateManager(cwd=root, worker="w")
    month_ago = time.time() - 30 * 86400
    for _ in range(5):
        _same_second_start()
        start = int(time.time())
        manager.skip(eid, "same", worker="w")  # (entering an active stage draws a new token)
        blob = git(root, "rev-parse", f"HEAD:{rel}").strip()
        git(root, "reset", "-q", "--hard", "HEAD~1")
        loose = root / ".git" / "objects" / blob[:2] / blob[2:]
        os.utime(loose, (month_ago, month_ago))
        started = time.time()
        manager.skip(eid, "same", worker="w")
        if int(time.time()) == start:
            break
        git(root, "reset", "-q", "--hard", "HEAD~1")
    else:
        pytest.fail("could not make the same transition twice in one second in 5 tries")

    assert git(root, "rev-parse", f"HEAD:{rel}").strip() == blob
    assert loose.stat().st_mtime >= started - 1, "the existing object was not freshened"


def test_fsck_repair_keeps_gits_own_in_flight_object_files(one: tuple[Path, str, str]) -> None:
    root, _, _ = one
    folder = root / ".git" / "objects" / "ab"
    folder.mkdir(exist_ok=True)
    tmp = folder / "tmp_obj_Xy12Zq"  # git's mkstemp name: no pid in it
    tmp.write_bytes(b"x" * 100)

    done = hy(root, "fsck", "--repair")

    assert done.returncode in (0, 1), done.stderr
    assert tmp.exists(), "fsck --repair deleted a git process's in-flight object file"


def test_the_tree_of_a_large_commit_is_read_from_its_start(tmp_path: Path) -> None:
    """A discovery's commit lists every new episode (megabytes at 100,000): only its first line
    is inflated to find the tree; a packed commit and a corrupt loose one are read as before."""
    from hystate.core.errors import GitError
    from hystate.git import GitRepo

    repo_dir = tmp_path / "r"
    git(tmp_path, "init", "-q", "-b", "main", str(repo_dir))
    git(repo_dir, "config", "user.name", "t")
    git(repo_dir, "config", "user.email", "t@example.com")
    (repo_dir / "f").write_text("x\n")
    git(repo_dir, "add", "f")
    body = "".join(f"hy0_hooting_yard_{i:06d}\n" for i in range(60_000))  # ~1.4 MB
    message = tmp_path / "message"
    message.write_text("discover: 60000 new episodes\n\n" + body)
    git(repo_dir, "commit", "-q", "-F", str(message))
    head, tree = git(repo_dir, "rev-parse", "HEAD", "HEAD^{tree}").split()
    assert GitRepo.discover(repo_dir).objects.commit_tree(bytes.fromhex(head)).hex() == tree
    loose = repo_dir / ".git" / "objects" / head[:2] / head[2:]
    git(repo_dir, "gc", "-q")
    assert not loose.exists()
    assert GitRepo.discover(repo_dir).objects.commit_tree(bytes.fromhex(head)).hex() == tree
    git(repo_dir, "commit", "-q", "--allow-empty", "-m", "another")
    second = git(repo_dir, "rev-parse", "HEAD").strip()
    path = repo_dir / ".git" / "objects" / second[:2] / second[2:]
    path.chmod(0o644)
    path.write_bytes(b"not zlib at all")
    with pytest.raises(GitError, match="corrupt loose object"):
        GitRepo.discover(repo_dir).objects.commit_tree(bytes.fromhex(second))
