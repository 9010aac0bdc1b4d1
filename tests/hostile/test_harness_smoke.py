from pathlib import Path

from tests.hostile.harness import compare, run_hostile, snapshot


def test_harness_refusal_and_compare(repo: Path) -> None:
    result = run_hostile(repo, ["show", "no-such-episode"], 4)
    assert "no-such-episode" in result.line
    before = snapshot(repo)
    (repo.parent / "outside.txt").write_text("x")
    assert compare(before, snapshot(repo)) == [
        "created outside.txt (file:0:" + __import__("hashlib").sha256(b"x").hexdigest() + ")"
    ]
