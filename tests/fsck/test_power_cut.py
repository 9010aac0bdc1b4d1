"""Power cuts (issue 26): images of a repository taken while two real workers moved episodes,
with what a power cut leaves applied (``tests.harness.powercut``: new, never-synced files
come back empty, files renamed over old ones keep their content). ``fsck --repair`` mends each
image alone: nothing acknowledged is lost (the episode files, synced, are all committed again),
git itself finds nothing wrong, ``status`` works, a second fsck is clean."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import git, run_hystate
from tests.harness.powercut import images_while_working


def episode_files(repo: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(repo)): p.read_bytes()
        for p in sorted((repo / "processed").rglob("*.yaml"))
    }


def git_ok(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)


def test_power_cut_images_are_mended_without_a_person(repo: Path, tmp_path: Path) -> None:
    git(repo, "config", "core.fsync", "none")  # the worst case: only episode files synced
    ids = sorted(p.stem for p in (repo / "processed").rglob("*.yaml"))
    groups = [ids[0:5], ids[5:10]]
    images = images_while_working(repo, tmp_path / "images", groups, count=4, every=10)
    # two variants of the damage: objects torn (garbage) instead of empty, and the branch's
    # ref file itself empty (as a ref made since the last sync would be)
    for path in (images[1] / ".git" / "objects").glob("??/*"):
        if path.stat().st_size == 0:
            path.write_bytes(b"x\x9c garbage" * 3)
    (images[3] / ".git" / "refs" / "heads" / "main").write_bytes(b"")
    damaged = 0
    for image in images:
        before = episode_files(image)
        if git_ok(image, "cat-file", "-p", "HEAD^{tree}").returncode != 0:
            damaged += 1
        repaired = run_hystate(image, "fsck", "--repair", "--json", timeout=300)
        assert repaired.returncode == 0, (image.name, repaired.stdout, repaired.stderr)
        assert episode_files(image) == before, image.name  # nothing acknowledged is lost
        for rel, data in before.items():
            assert git(image, "show", f"HEAD:{rel}").encode() == data, (image.name, rel)
        checked = git_ok(image, "fsck", "--no-dangling")
        assert checked.returncode == 0, (image.name, checked.stdout, checked.stderr)
        assert git(image, "status", "--porcelain", "--", "processed") == ""
        status = run_hystate(image, "status", "--json")
        assert status.returncode == 0, (image.name, status.stderr)
        counts = json.loads(status.stdout)["progress"]
        assert sum(counts.values()) == len(ids)
        again = run_hystate(image, "fsck", "--json")
        assert again.returncode == 0, (image.name, again.stdout, again.stderr)
        assert json.loads(again.stdout)["findings"] == []
        # and work goes on
        moved = run_hystate(image, "advance", ids[-1], "downloading")
        assert moved.returncode == 0, (image.name, moved.stderr)
    assert damaged >= 1, "the harness made no damage: the test proves nothing"


def test_claims_whose_discovery_commit_was_lost_too_come_back(repo: Path) -> None:
    """The power cut took the discovery's commit and the claims after it: the claimed episodes'
    files (synced) are committed again, still claimed, never removed and re-discovered."""
    git(repo, "config", "core.fsync", "none")
    before = git(repo, "rev-parse", "HEAD").strip()
    new = [f"hy0_power_cut_2012-06-0{n}" for n in range(1, 4)]
    for eid in new:
        added = run_hystate(repo, "add", eid, "--title", "Cut", "--date", eid[-10:])
        assert added.returncode == 0, added.stderr
    for eid in new[:2]:
        assert run_hystate(repo, "advance", eid, "downloading", "--worker", "w").returncode == 0
    lost = git(repo, "rev-list", "--objects", "HEAD", "--not", before).split()
    for sha in (word for word in lost if len(word) == 40):
        (repo / ".git" / "objects" / sha[:2] / sha[2:]).write_bytes(b"")  # never synced
    files = episode_files(repo)

    fixed = run_hystate(repo, "fsck", "--repair")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert episode_files(repo) == files  # nothing removed, nothing rewritten
    listed = run_hystate(repo, "list", "--stage", "downloading", "--json")
    assert sorted(e["episode_id"] for e in json.loads(listed.stdout)) == new[:2]
    assert git_ok(repo, "fsck", "--no-dangling").returncode == 0
    assert run_hystate(repo, "fsck").returncode == 0


def test_a_torn_index_is_made_anew_and_claims_go_on(repo: Path) -> None:
    """A power cut left git's index empty, or cut short: git refuses every command reading it.
    `fsck --repair` sets it aside and makes it anew from HEAD; claims then go on."""
    for size in (0, 100):
        with open(repo / ".git" / "index", "r+b") as fh:
            fh.truncate(size)
        fixed = run_hystate(repo, "fsck", "--repair")
        assert fixed.returncode == 0, fixed.stdout + fixed.stderr
        assert "made anew from HEAD" in fixed.stdout
        assert git_ok(repo, "status", "--porcelain").stdout == ""
        claimed = run_hystate(repo, "next", "downloading", "--claim", "--worker", f"w{size}")
        assert claimed.returncode == 0, claimed.stderr
    assert list((repo / ".git" / "hystate-lost").glob("index-*"))
