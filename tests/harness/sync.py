"""A real git server for the sync tests: a bare repository served by ``git daemon`` on
127.0.0.1 (a free port), which can be killed and restarted; clones of it set up as nodes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import git


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class GitServer:
    """``git daemon --export-all --enable=receive-pack`` serving ``base/state.git``."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.bare = base / "state.git"
        base.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(self.bare)], check=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"git://127.0.0.1:{self.port}/state.git"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "git",
                "daemon",
                "--export-all",
                "--enable=receive-pack",
                "--reuseaddr",
                f"--base-path={self.base}",
                "--listen=127.0.0.1",
                f"--port={self.port}",
                "--informative-errors",
                str(self.base),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("git daemon exited at start") from None
                time.sleep(0.05)
        raise RuntimeError("git daemon did not start listening")

    def kill(self) -> None:
        """SIGKILL the daemon and the children serving connections (its process group)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None

    def tip(self) -> str:
        return git(self.bare, "rev-parse", "refs/heads/main").strip()


def seed_remote(server: GitServer, work: Path, catalog: Path, config: dict[str, object]) -> None:
    """The first node: init, hystate.yaml, discover the catalog, push main."""
    from tests.conftest import run_hystate

    work.mkdir(parents=True)
    git(work, "init", "-q", "-b", "main")
    (work / "hystate.yaml").write_text(json.dumps({"state_management": config}, indent=1))
    for args in (("init",), ("discover", "--from", str(catalog))):
        proc = run_hystate(work, *args, timeout=300)
        assert proc.returncode == 0, proc.stderr
    git(work, "add", "hystate.yaml")
    git(
        work,
        "-c",
        "user.name=seed",
        "-c",
        "user.email=seed@example.invalid",
        "commit",
        "-qm",
        "config",
    )
    git(work, "remote", "add", "origin", server.url)
    git(work, "push", "-q", "origin", "main")


def clone_node(server: GitServer, path: Path, node: str) -> Path:
    subprocess.run(["git", "clone", "-q", server.url, str(path)], check=True, capture_output=True)
    git(path, "config", "hystate.node", node)
    git(path, "config", "user.name", node)
    git(path, "config", "user.email", f"{node}@example.invalid")
    from hystate.manager import StateManager

    StateManager(cwd=path).ensure_layout()  # the merge driver and options of this clone
    return path


def fsck_clean(path: Path) -> None:
    proc = subprocess.run(
        ["git", "fsck", "--no-progress"], cwd=path, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@contextmanager
def served(tmp_path: Path, config: dict[str, object], episodes: int) -> Iterator[GitServer]:
    """A running server whose branch holds ``episodes`` discovered episodes and ``config``."""
    from tests.conftest import catalog_rows, write_search_json

    srv = GitServer(tmp_path / "srv")
    srv.start()
    try:
        catalog = write_search_json(tmp_path / "catalog.json", catalog_rows(episodes))
        seed_remote(srv, tmp_path / "seed", catalog, config)
        yield srv
    finally:
        srv.kill()


def clone_nodes(server: GitServer, tmp_path: Path, count: int = 2) -> list[Path]:
    return [clone_node(server, tmp_path / f"node{i}", f"n{i}") for i in range(count)]


def server_tickets(server: GitServer) -> dict[str, str]:
    """The server's tickets (``sync.claims: refs``): episode id -> commit."""
    out = git(
        server.bare,
        "for-each-ref",
        "--format=%(refname:lstrip=3) %(objectname)",
        "refs/hystate/claims/",
    )
    return dict(line.split(" ", 1) for line in out.splitlines())


def branch_docs(server: GitServer, tmp: Path) -> dict[str, dict]:  # type: ignore[type-arg]
    """Every episode file on the server's branch, parsed: episode id -> document."""
    import yaml

    out = tmp / f"remote-{time.monotonic_ns()}"
    out.mkdir()
    archive = subprocess.run(
        ["git", "archive", "main", "processed"], cwd=server.bare, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return {p.stem: yaml.safe_load(p.read_text()) for p in out.rglob("*.yaml")}
