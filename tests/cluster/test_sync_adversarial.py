"""hystate sync against a hostile or broken remote (a real ``git daemon``): what another node,
a person with push access or a misconfiguration can put there must end in a correct merge or
one line with its exit code; nothing outside the repository is written, nothing local lost."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hystate.engine import claims as work
from hystate.manager import StateManager
from tests.conftest import git, run_hystate
from tests.harness.sync import GitServer, clone_nodes, fsck_clean, served

CONFIG = {
    "sync": {"remote": "origin", "push": "batch"},
    "recovery": {"retry_delay": 0},
    "locks": {"timeout": 5},
}
IDENT = {"GIT_AUTHOR_NAME": "x", "GIT_AUTHOR_EMAIL": "x@x", "GIT_COMMITTER_NAME": "x"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GitServer]:
    with served(tmp_path, CONFIG, 4) as srv:
        yield srv


@pytest.fixture
def nodes(server: GitServer, tmp_path: Path) -> list[Path]:
    return clone_nodes(server, tmp_path)


def ids(path: Path) -> list[str]:
    return sorted(p.stem for p in StateManager(cwd=path).store.iter_paths())


def episode_path(path: Path, episode_id: str) -> str:
    (name,) = [n for n in git(path, "ls-files").split() if n.endswith(f"/{episode_id}.yaml")]
    return name


def _obj(repo: Path, kind: str, data: bytes) -> str:
    return subprocess.run(
        ["git", "hash-object", "--literally", "-t", kind, "-w", "--stdin"],
        cwd=repo, input=data, capture_output=True, check=True,
    ).stdout.decode().strip()  # fmt: skip


def _tree(repo: Path, sha: str | None) -> dict[bytes, tuple[bytes, str]]:
    if sha is None:
        return {}
    data = subprocess.run(
        ["git", "cat-file", "tree", sha], cwd=repo, capture_output=True, check=True
    ).stdout
    out, i = {}, 0
    while i < len(data):
        sp, nul = data.index(b" ", i), data.index(b"\0", i)
        out[data[sp + 1 : nul]] = (data[i:sp], data[nul + 1 : nul + 21].hex())
        i = nul + 21
    return out


def _put(repo: Path, tree: str | None, parts: list[bytes], entry: tuple[bytes, str]) -> str:
    entries = _tree(repo, tree)
    if len(parts) > 1:
        sub = entries.get(parts[0])
        entry = (
            b"40000",
            _put(repo, sub[1] if sub and sub[0] == b"40000" else None, parts[1:], entry),
        )
    entries[parts[0]] = entry

    def key(name: bytes) -> bytes:
        return name + (b"/" if entries[name][0] == b"40000" else b"")

    body = b"".join(
        entries[n][0] + b" " + n + b"\0" + bytes.fromhex(entries[n][1])
        for n in sorted(entries, key=key)
    )
    return _obj(repo, "tree", body)


def push_raw(repo: Path, changes: dict[bytes, tuple[bytes, bytes | str]]) -> str:
    """A commit on ``repo``'s HEAD with raw tree entries (names git would refuse included):
    path -> (mode, content, or a sha for a submodule), pushed to the remote's main as a person
    with push access could."""
    tree = git(repo, "rev-parse", "HEAD^{tree}").strip()
    for path, (mode, content) in changes.items():
        sha = content if isinstance(content, str) else _obj(repo, "blob", content)
        tree = _put(repo, tree, path.split(b"\0"), (mode, sha))
    import os

    commit = subprocess.run(
        ["git", "commit-tree", tree, "-p", "HEAD", "-m", "from elsewhere"],
        cwd=repo, env={**os.environ, **IDENT, "GIT_COMMITTER_EMAIL": "x@x"},
        capture_output=True, check=True,
    ).stdout.decode().strip()  # fmt: skip
    git(repo, "push", "-q", "origin", f"{commit}:refs/heads/main")
    git(repo, "update-ref", "HEAD", commit)
    return commit


def one_line(proc: subprocess.CompletedProcess[str], code: int) -> str:
    assert proc.returncode == code, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "internal error" not in proc.stderr
    return proc.stderr


def local_skip(path: Path, episode_id: str) -> str:
    """An unpublished transition on the node (sync.push: batch); its commit."""
    StateManager(cwd=path, worker="w").update_state(episode_id, "skipped", message="local")
    return git(path, "rev-parse", "HEAD").strip()


def test_remote_files_named_like_hystate_locks_do_not_block_sync(
    server: GitServer, nodes: list[Path]
) -> None:
    a, b = nodes
    year = episode_path(b, ids(b)[0]).rsplit("/", 1)[0]
    for name in ("_sync.yaml", "_repo.yaml"):
        (b / year / name).write_text("x: 1\n")
        git(b, "add", "-f", f"{year}/{name}")
    git(b, "commit", "-qm", "files named like hystate's own locks")
    git(b, "push", "-q", "origin", "main")
    local_skip(a, ids(a)[1])
    proc = run_hystate(a, "sync", timeout=120)
    assert proc.returncode == 0, proc.stderr  # was: exit 6 after waiting on its own sync lock
    assert git(a, "rev-parse", "HEAD").strip() == server.tip()
    assert (a / year / "_sync.yaml").read_text() == "x: 1\n"


def test_a_submodule_where_an_episode_file_was_drops_the_local_transition(
    server: GitServer, nodes: list[Path]
) -> None:
    a, b = nodes
    eid = ids(a)[0]
    before = git(a, "rev-parse", "HEAD").strip()
    local_skip(a, eid)
    rel = episode_path(b, eid).encode().replace(b"/", b"\0")
    push_raw(b, {rel: (b"160000", "1" * 40)})
    proc = run_hystate(a, "sync", "--json")
    assert proc.returncode == 0, proc.stderr  # was: exit 7 "git object 111... is missing"
    (dropped,) = json.loads(proc.stdout)["dropped"]
    assert dropped["episode_id"] == eid and "submodule" in dropped["reason"]
    assert git(a, "rev-parse", "HEAD").strip() == server.tip() != before
    assert git(a, "status", "--porcelain", "--untracked-files=no") == ""


@pytest.mark.parametrize(
    "name", [b".git\0config", b"..", b"..\x2f..\x2fescaped.yaml", b".GIT\0hooks\0post-checkout"]
)
def test_paths_git_refuses_stop_the_sync_with_nothing_changed(
    server: GitServer, nodes: list[Path], tmp_path: Path, name: bytes
) -> None:
    a, b = nodes
    local_skip(a, ids(a)[0])
    head, index = git(a, "rev-parse", "HEAD"), (a / ".git" / "index").read_bytes()
    year = episode_path(b, ids(b)[0]).rsplit("/", 1)[0].encode()
    push_raw(b, {year.replace(b"/", b"\0") + b"\0" + name: (b"100644", b"[core]\n\tx = 1\n")})
    err = one_line(run_hystate(a, "sync"), 7)
    assert "invalid path" in err and "stash" not in err  # the remote's fault, not the person's
    assert git(a, "rev-parse", "HEAD") == head and (a / ".git" / "index").read_bytes() == index
    assert not (tmp_path / "escaped.yaml").exists()
    assert git(a, "status", "--porcelain") == ""


def test_symlinks_from_the_remote_write_nothing_outside(
    server: GitServer, nodes: list[Path], tmp_path: Path
) -> None:
    a, b = nodes
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.yaml").write_text("precious\n")
    eid, other = ids(a)[0], ids(a)[1]
    local_skip(a, eid)
    local_skip(a, other)
    rel, year = episode_path(b, eid), episode_path(b, other).rsplit("/", 1)[0]
    push_raw(
        b,
        {
            rel.encode().replace(b"/", b"\0"): (b"120000", str(outside / "secret.yaml").encode()),
            year.encode().replace(b"/", b"\0"): (b"120000", str(outside).encode()),
        },
    )
    proc = run_hystate(a, "sync", "--json")
    assert proc.returncode == 0, proc.stderr
    assert sorted(r["episode_id"] for r in json.loads(proc.stdout)["dropped"]) == sorted(
        [eid, other]
    )
    assert sorted(p.name for p in outside.iterdir()) == ["secret.yaml"]
    assert (outside / "secret.yaml").read_text() == "precious\n"
    assert (a / rel).is_symlink() and git(a, "status", "--porcelain") == ""
    one_line(run_hystate(a, "advance", eid, "downloading"), 5)  # never through the link
    assert (outside / "secret.yaml").read_text() == "precious\n"


def test_a_remote_with_unrelated_history_is_refused(
    server: GitServer, nodes: list[Path], tmp_path: Path
) -> None:
    a = nodes[0]
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q", "-b", "main")
    (other / "README").write_text("another project\n")
    git(other, "add", "README")
    git(other, "-c", "user.name=o", "-c", "user.email=o@x", "commit", "-qm", "another project")
    bare = server.base / "other.git"
    git(other, "clone", "-q", "--bare", str(other), str(bare))
    git(a, "remote", "add", "other", server.url.replace("state.git", "other.git"))
    head, tip = git(a, "rev-parse", "HEAD"), git(bare, "rev-parse", "main")
    err = one_line(run_hystate(a, "sync", "--remote", "other"), 7)
    assert "shares no history" in err
    assert git(a, "rev-parse", "HEAD") == head and git(bare, "rev-parse", "main") == tip
    assert not (a / "README").exists()


def test_hostile_lease_tables_of_other_nodes(server: GitServer, nodes: list[Path]) -> None:
    a, b = nodes
    (claimed,) = StateManager(cwd=a, worker="wa").claim_next("downloading", 1, worker="wa")
    eid, entered = claimed.episode.episode_id, claimed.episode.history[-1]["at"]
    lease = {"stage": "downloading", "entered_at": entered}
    tables = {
        "deep": b"[" * 100_000 + b"]" * 100_000,
        "naive": json.dumps({"leases": {eid: {**lease, "expires_at": "2999-01-01T00:00:00"}}}),
        "junk": json.dumps({"leases": {eid: {**lease, "expires_at": 1e308, "renewed_at": []}}}),
    }
    for node, data in tables.items():
        blob = _obj(b, "blob", data if isinstance(data, bytes) else data.encode())
        tree = _obj(b, "tree", b"100644 leases.json\0" + bytes.fromhex(blob))
        commit = git(b, "commit-tree", tree, "-m", "t").strip()
        git(b, "push", "-q", "-f", "origin", f"{commit}:refs/hystate/leases/{node}")
    git(b, "push", "-q", "-f", "origin", f"{blob}:refs/hystate/leases/not-a-commit")
    for args in (("sync",), ("fsck",), ("fsck", "--repair"), ("show", eid)):
        proc = run_hystate(b, *args)
        assert proc.returncode == 0, (args, proc.stderr)  # was: internal error, exit 1
    git(b, "push", "-q", "origin", ":refs/hystate/leases/deep")
    assert run_hystate(b, "sync").returncode == 0
    assert "remote-leases/deep" not in git(b, "for-each-ref", "refs/hystate")  # pruned


def test_the_same_worker_name_on_two_nodes_in_the_same_second(
    server: GitServer, nodes: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each node's worker is called "dl"; both claim the same episode within one second:
    equal history entries. Only the claim that reached the remote is acknowledged."""
    import hystate.engine.steps

    monkeypatch.setattr(hystate.engine.steps, "now_utc", lambda: "2030-01-01T00:00:00+00:00")
    a, b = StateManager(cwd=nodes[0], worker="dl"), StateManager(cwd=nodes[1], worker="dl")
    original = work.claim
    raced: list[str] = []

    def racing(
        m: StateManager, stage: str, limit: int, worker: str | None, **kw: object
    ) -> list[object]:
        kw["order"] = None  # both nodes the oldest first: they race for the same episode
        if m is b and not raced:  # a claims between b's last fetch and b's push
            raced.append("")
            raced[:] = [r.episode.episode_id for r in a.claim_next(stage, 1, worker="dl")]
        return original(m, stage, limit, worker, **kw)  # type: ignore[arg-type,return-value]

    monkeypatch.setattr(work, "claim", racing)
    got = b.claim_next("downloading", 1, worker="dl")
    assert raced and [r.episode.episode_id for r in got] != raced  # was: both got it
    assert len(got) == 1
    for path in nodes:
        fsck_clean(path)


def test_bad_remote_input_is_one_line_and_no_secret(server: GitServer, nodes: list[Path]) -> None:
    a = nodes[0]
    one_line(run_hystate(a, "sync", "--remote", "--upload-pack=touch x"), 2)
    one_line(run_hystate(a, "next", "downloading", "--claim", "--remote", "-x"), 2)
    assert "no git remote named 'nope'" in one_line(run_hystate(a, "sync", "--remote", "nope"), 7)
    git(a, "remote", "add", "secret", "git://alice:s3cr3t@127.0.0.1:9/x.git")
    git(a, "remote", "add", "secret2", "http://bob:hunter2@127.0.0.1:9/x.git")
    git(a, "remote", "add", "notrepo", str(a / "hystate.yaml"))
    for name in ("secret", "secret2"):
        for args in (
            ("sync", "--remote", name),
            ("next", "downloading", "--claim", "--remote", name),
        ):
            err = one_line(run_hystate(a, *args), 7)
            assert "s3cr3t" not in err and "hunter2" not in err
    err = one_line(run_hystate(a, "sync", "--remote", "notrepo"), 7)
    assert "hystate.yaml" in err  # git's reason, not "and the repository exists."
    assert not (a / "x").exists()


def test_a_persons_fetch_holding_the_tracking_ref_is_waited_for(
    server: GitServer, nodes: list[Path]
) -> None:
    """`git pull` in the node's checkout while hystate syncs: both update the tracking ref; the
    loser of that race used to fail the sync (and a claim) with exit 7."""
    import threading

    a, b = nodes
    StateManager(cwd=b, worker="wb").claim_next("downloading", 1, worker="wb")
    lock = a / ".git" / "refs" / "remotes" / "origin" / "main.lock"
    lock.write_text("")  # as git's own fetch holds it while it updates the ref
    timer = threading.Timer(1.0, lock.unlink)
    timer.start()
    try:
        proc = run_hystate(a, "next", "downloading", "--claim", "--worker", "wa")
    finally:
        timer.join()
    assert proc.returncode == 0, proc.stderr
    assert git(a, "rev-parse", "HEAD").strip() == server.tip()


KILLED_AFTER_CHECKOUT = """
import os, signal, sys
from hystate.cluster import sync
from hystate.git import index
from hystate.manager import StateManager
stage = index.IndexLock.stage_with_git
def killed(*args, **kwargs):
    stage(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)  # git wrote the files; the branch has not moved
index.IndexLock.stage_with_git = killed
sync.sync(StateManager(cwd=sys.argv[1]))
"""


def test_sync_killed_after_git_wrote_the_files_recovers(
    server: GitServer, nodes: list[Path]
) -> None:
    a, b = nodes
    (taken,) = StateManager(cwd=b, worker="wb").claim_next("downloading", 1, worker="wb")
    mine = local_skip(a, ids(a)[-1])
    (a / "NOTES.md").write_text("a person's draft\n")  # untracked, and an unstaged edit:
    (a / "hystate.yaml").write_text((a / "hystate.yaml").read_text() + "# mine\n")
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_AFTER_CHECKOUT, str(a)], capture_output=True, timeout=120
    )
    assert proc.returncode == -9, proc.stderr
    rel = episode_path(a, taken.episode.episode_id)
    assert git(a, "diff", "--name-only").split() == sorted(["hystate.yaml", rel])
    proc = run_hystate(a, "sync", "--json")
    assert proc.returncode == 0, proc.stderr  # was: exit 7 "not uptodate" on every sync
    assert len(json.loads(proc.stdout)["pushed"]) == 1
    assert git(a, "rev-parse", "HEAD").strip() == server.tip()
    assert git(a, "log", "--format=%s", "-1").strip().endswith(": discovered -> skipped")
    assert git(server.bare, "log", "--format=%s", "main").count("-> skipped") == 1
    assert git(a, "diff", "--name-only").split() == ["hystate.yaml"]  # the person's edit stays
    assert (a / "NOTES.md").read_text() == "a person's draft\n"
    assert run_hystate(a, "fsck").returncode == 0
    fsck_clean(a)
    assert mine not in git(a, "rev-list", "HEAD")  # replayed, not kept as it was


def test_a_person_switching_branch_during_sync_keeps_their_branch_off_the_remote(
    server: GitServer, nodes: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from hystate.cluster import sync
    from hystate.core.errors import GitError
    from hystate.git import remote as gr

    a, b = nodes
    StateManager(cwd=b, worker="wb").claim_next("downloading", 1, worker="wb")
    local_skip(a, ids(a)[-1])
    fetch = gr.fetch

    def person_switches(*args: object, **kwargs: object) -> str | None:
        tip = fetch(*args, **kwargs)  # type: ignore[arg-type]
        if not git(a, "branch", "--list", "experiment"):
            git(a, "checkout", "-q", "-b", "experiment")
            (a / "EXPERIMENT.md").write_text("not for the others\n")
            git(a, "add", "EXPERIMENT.md")
            git(a, "commit", "-qm", "experiment")
        return tip

    monkeypatch.setattr(gr, "fetch", person_switches)
    with pytest.raises(GitError, match="experiment"):
        sync.sync(StateManager(cwd=a))
    assert "EXPERIMENT.md" not in git(server.bare, "ls-tree", "-r", "--name-only", "main")
    assert git(a, "log", "-1", "--format=%s", "experiment").strip() == "experiment"


def test_a_push_the_server_refuses_for_good_is_one_line_at_once(
    server: GitServer, nodes: list[Path]
) -> None:
    a = nodes[0]
    hook = server.bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'branch frozen by the admins' >&2\nexit 1\n")
    hook.chmod(0o755)
    local_skip(a, ids(a)[0])
    err = one_line(run_hystate(a, "sync"), 7)  # was: 40 rounds, then "gave up pushing"
    assert "pre-receive hook declined" in err and "branch frozen by the admins" in err
    err = one_line(run_hystate(a, "next", "downloading", "--claim", "--worker", "w"), 7)
    assert "refused the push" in err
    assert git(server.bare, "log", "--format=%s", "main").count("->") == 0
    assert len(git(a, "log", "--format=%s", "origin/main..HEAD").splitlines()) == 1  # kept


def test_a_remote_that_never_answers_leaves_no_git_behind(
    server: GitServer, nodes: list[Path]
) -> None:
    """An HTTP remote that accepts connections and never answers: exit 7 within sync.timeout,
    and git's transport helper is ended too (it was left hanging on the dead server)."""
    import socket
    import time

    from tests.harness.sync import free_port

    a = nodes[0]
    port = free_port()
    silent = socket.socket()
    silent.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    silent.bind(("127.0.0.1", port))
    silent.listen(16)  # connections complete in the backlog; nothing is ever read or sent
    try:
        git(a, "remote", "add", "silent", f"http://127.0.0.1:{port}/state.git")
        config = (a / "hystate.yaml").read_text()
        (a / "hystate.yaml").write_text(config.replace('"push"', '"timeout": 2, "push"'))
        assert '"timeout": 2' in (a / "hystate.yaml").read_text()
        err = one_line(run_hystate(a, "next", "downloading", "--claim", "--remote", "silent"), 7)
        assert "no answer from the remote in 2 s" in err
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the group is ended before hystate exits
            ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
            if f"127.0.0.1:{port}" not in ps:
                break
            time.sleep(0.2)
        assert f"127.0.0.1:{port}" not in ps
    finally:
        silent.close()


def test_a_dropped_transitions_reason_quotes_the_remote_briefly(
    server: GitServer, nodes: list[Path]
) -> None:
    import yaml

    a, b = nodes
    eid = ids(a)[0]
    local_skip(a, eid)
    rel = episode_path(b, eid)
    doc = yaml.safe_load((b / rel).read_text())
    who = "\x1b]0;title\x07" + "A" * 100_000  # valid for the schema? irrelevant: quoted
    doc.update(stage="downloading", worker="x", attempts={**doc["attempts"], "download": 1})
    doc["history"].append(
        {"at": doc["last_updated"], "from": "discovered", "to": "downloading", "by": who}
    )
    push_raw(
        b,
        {
            rel.encode().replace(b"/", b"\0"): (
                b"100644",
                yaml.safe_dump(doc, sort_keys=False).encode(),
            )
        },
    )
    proc = run_hystate(a, "sync")
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout and "\x07" not in proc.stdout
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("dropped")]
    assert eid in line and len(line) < 500  # was: the whole 100,000-character name


@pytest.mark.parametrize("name", [".locks/_sync.lock", ".locks/{eid}.lock", "{year}/.{eid}.99.tmp"])
def test_a_branch_tracking_hystates_local_files_is_not_checked_out(
    server: GitServer, nodes: list[Path], name: str
) -> None:
    a, b = nodes
    eid = ids(a)[0]
    year = episode_path(b, eid).split("/")[1]
    rel = "processed/" + name.format(eid=eid, year=year)
    (b / rel).parent.mkdir(exist_ok=True)
    (b / rel).write_text('{"host": "elsewhere", "pid": 1, "acquired_at": "2026-01-01T00:00:00Z"}')
    git(b, "add", "-f", rel)
    git(b, "commit", "-qm", "a lock committed by mistake")
    git(b, "push", "-q", "origin", "main")
    head = git(a, "rev-parse", "HEAD")
    assert rel in one_line(run_hystate(a, "sync"), 7)  # was: every transition of it exit 6
    assert git(a, "rev-parse", "HEAD") == head and not (a / rel).exists()
    one_line(run_hystate(a, "next", "downloading", "--claim", "--worker", "w"), 7)
    git(b, "rm", "-q", "--cached", rel)
    git(b, "commit", "-qm", "mended")
    git(b, "push", "-q", "origin", "main")
    assert run_hystate(a, "sync").returncode == 0
    proc = run_hystate(a, "advance", eid, "downloading", "--worker", "w")
    assert proc.returncode == 0, proc.stderr


def test_a_rewritten_remote_branch_is_refused_not_built_on(
    server: GitServer, nodes: list[Path], tmp_path: Path
) -> None:
    """A forced push erased an acknowledged claim: a node that saw the claim refuses to build
    on the rewritten branch (it would take the erased claim for never made) until told to."""
    a, b = nodes
    StateManager(cwd=a, worker="wa").claim_next("downloading", 1, worker="wa")
    git(b, "fetch", "-q")
    git(b, "push", "-q", "-f", "origin", "origin/main~1:refs/heads/main")  # the claim erased
    rewritten = server.tip()
    err = one_line(run_hystate(a, "sync"), 7)  # was: exit 0, building on the rewrite
    assert "was rewritten" in err
    one_line(run_hystate(a, "next", "downloading", "--claim", "--worker", "wa"), 7)
    assert server.tip() == rewritten
    git(a, "fetch", "-q", "origin", "+main:refs/remotes/origin/main")  # a person decides
    proc = run_hystate(a, "sync", "--json")
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["pushed"]) == 1  # the claim is back on the remote


@pytest.mark.parametrize("node", ["n0.lock", "a..b"])
def test_node_names_git_refuses_as_refs_still_publish_leases(
    server: GitServer, nodes: list[Path], monkeypatch: pytest.MonkeyPatch, node: str
) -> None:
    a = nodes[0]
    (claimed,) = StateManager(cwd=a, worker="wa").claim_next("downloading", 1, worker="wa")
    monkeypatch.setenv("HYSTATE_NODE", node)
    proc = run_hystate(
        a, "heartbeat", claimed.episode.episode_id, "--worker", "wa", "--lease", str(claimed.lease)
    )
    assert proc.returncode == 0 and "not published" not in proc.stderr, proc.stderr
    published = git(server.bare, "for-each-ref", "--format=%(refname)", "refs/hystate/leases")
    assert len(published.split()) == 2  # n0's own from the claim, and this one


def test_two_clones_given_the_same_node_name_are_told(server: GitServer, nodes: list[Path]) -> None:
    """Each would overwrite the other's lease table: renewals of one vanish from the remote and
    another node's fsck may take its live episodes for lost. Said, not silent."""
    a, b = nodes
    git(b, "config", "hystate.node", "n0")  # a copy of a's configuration
    (mine,) = StateManager(cwd=a, worker="wa").claim_next("downloading", 1, worker="wa")
    (theirs,) = StateManager(cwd=b, worker="wb").claim_next("downloading", 1, worker="wb")
    beat = ("heartbeat", "--lease")
    assert (
        run_hystate(a, beat[0], mine.episode.episode_id, beat[1], str(mine.lease)).returncode == 0
    )
    proc = run_hystate(b, beat[0], theirs.episode.episode_id, beat[1], str(theirs.lease))
    assert proc.returncode == 0, proc.stderr
    assert "another clone published leases as node 'n0'" in proc.stderr
    proc = run_hystate(a, "sync")  # a learns it at its next fetch
    assert proc.returncode == 0 and "another clone" in proc.stderr, proc.stderr
