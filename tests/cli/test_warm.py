"""The warm fork server (issue 29): a command it serves is the command run in-process, byte
for byte (output, exit code, what it writes), with the caller's environment, folder and
signals; a client killed takes its command with it; any doubt (a server killed, code changed
on disk, an untrusted socket folder, a command not on the list) runs the command in-process.
Real processes throughout; no timing is asserted."""

from __future__ import annotations

import json
import marshal
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from hystate.core import warmwire as wire
from hystate.core.locks import pid_alive
from hystate.manager import StateManager
from tests.conftest import REPO_ROOT, commits, git

# hystate as the console script runs it (hystate/launcher.py)
CLIENT = [
    sys.executable,
    "-c",
    "import sys; sys.argv[0] = 'hystate'; from hystate.launcher import main; main()",
]


@dataclass
class Warm:
    socket: Path
    pid: int
    env: dict[str, str]


def hystate(
    cwd: Path,
    *args: str,
    warm: Warm | Path | None = None,
    env: Mapping[str, str | None] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """One ``hystate`` process: served by ``warm`` when given, else in-process."""
    return subprocess.run(
        [*CLIENT, *args], cwd=cwd, env=_env(warm, env), capture_output=True, timeout=120
    )


def _env(warm: Warm | Path | None, extra: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """This process's environment, the server's additions, ``extra`` (None: removed)."""
    env = dict(os.environ)
    env.pop("HYSTATE_WARM", None)
    if isinstance(warm, Warm):
        env.update(warm.env)
        env["HYSTATE_WARM"] = str(warm.socket)
    elif warm is not None:
        env["HYSTATE_WARM"] = str(warm)
    for name, value in (extra or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def start(folder: Path, env: Mapping[str, str] | None = None) -> Warm:
    path = folder / "warm.sock"
    proc = hystate(folder, "warm", "start", "--socket", str(path), env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode() == f"HYSTATE_WARM={path}; export HYSTATE_WARM;\n"
    found = re.search(r"\(pid (\d+)\)", proc.stderr.decode())
    assert found, proc.stderr
    return Warm(path, int(found.group(1)), dict(env or {}))


def kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    gone(pid)


def gone(pid: int, seconds: float = 20.0) -> bool:
    """Whether ``pid`` ended (a zombie counts as ended) within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            return True
        if stat[stat.rindex(b")") + 2 :].startswith(b"Z"):
            return True
        time.sleep(0.02)
    return False


def settled(pid: int, count: int) -> list[int]:
    """The children of ``pid`` once there are ``count`` of them (a status question's child
    may still be ending)."""
    deadline = time.monotonic() + 20
    while len(found := children_of(pid)) != count and time.monotonic() < deadline:
        time.sleep(0.02)
    return found


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        if int(fields[1]) == pid and fields[0] != b"Z":
            found.append(int(entry))
    return found


@pytest.fixture
def folder() -> Iterator[Path]:
    """A private folder with a short path (a Unix socket's path has at most 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="hw-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def warm(folder: Path) -> Iterator[Warm]:
    server = start(folder)
    yield server
    kill(server.pid)


def status(warm: Warm) -> dict[str, object]:
    proc = hystate(warm.socket.parent, "warm", "status", "--json", warm=warm)
    assert proc.returncode == 0, proc.stderr
    answer: dict[str, object] = json.loads(proc.stdout)
    return answer


def served(warm: Warm) -> int:
    return int(status(warm)["served"])  # type: ignore[call-overload]


def same(repo: Path, warm: Warm, *args: str) -> subprocess.CompletedProcess[bytes]:
    """``args`` in-process and served: the same exit code, stdout and stderr, byte for byte
    (but the time `status --json` says it is, which may be a second later)."""
    before = served(warm)
    here = hystate(repo, *args)
    there = hystate(repo, *args, warm=warm)
    assert (there.returncode, now(there.stdout), there.stderr) == (
        here.returncode,
        now(here.stdout),
        here.stderr,
    )
    assert served(warm) == before + 1  # it was served, not run by the client itself
    return here


def now(out: bytes) -> bytes:
    return re.sub(rb'"timestamp": "[^"]*"', b'"timestamp": "<now>"', out)


READS = [
    (["status"], 0),
    (["status", "--json"], 0),
    (["list"], 0),
    (["list", "--json", "--stage", "discovered"], 0),
    (["list", "--stage", "nowhere"], 2),
    (["list", "--stage", "nowhere", "--json"], 2),
    (["show", "{id}"], 0),
    (["show", "{id}", "--json"], 0),
    (["show", "hy0_no_such_episode"], 4),
    (["show", "hy0_no_such_episode", "--json"], 4),
    (["next", "downloading", "--limit", "3"], 0),
    (["next", "downloading", "--json"], 0),
    (["history", "{id}"], 0),
    (["-v", "show", "{id}"], 0),
    (["advance", "{id}", "published"], 3),
    (["advance", "{id}", "published", "--json"], 3),
    (["advance", "hy0_no_such_episode", "downloading"], 4),
    (["advance", "{id}", "nowhere"], 2),
    (["advance", "{id}", "downloading", "--set", "metrics.audio_size=-3"], 5),
    (["advance", "{id}", "downloading", "--bogus-option"], 2),
]


@pytest.mark.parametrize(("args", "code"), READS, ids=[" ".join(a) for a, _ in READS])
def test_served_is_in_process_byte_for_byte(
    repo: Path, episode_id: str, warm: Warm, args: list[str], code: int
) -> None:
    head = commits(repo)
    result = same(repo, warm, *[a.replace("{id}", episode_id) for a in args])
    assert result.returncode == code, result.stderr
    assert commits(repo) == head  # reads and refusals commit nothing


def normalized(out: bytes) -> str:
    text = out.decode()
    text = re.sub(r"\b[0-9a-f]{40}\b", "<sha>", text)
    text = re.sub(r"\b[0-9a-f]{8}\b", "<sha8>", text)
    return re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(\+00:00|Z)", "<time>", text)


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_an_advance_served_is_the_same_transition(
    repo: Path, episode_id: str, warm: Warm, tmp_path: Path, json_flag: list[str]
) -> None:
    twin = tmp_path / "twin"
    shutil.copytree(repo, twin, symlinks=True)
    args = ["advance", episode_id, "downloading", "-m", "fetch", *json_flag]
    here = hystate(repo, *args)
    there = hystate(twin, *args, warm=warm)
    assert here.returncode == there.returncode == 0, (here.stderr, there.stderr)
    assert normalized(there.stdout) == normalized(here.stdout)
    assert there.stderr == here.stderr
    assert served(warm) == 1
    for root in (repo, twin):
        assert len(commits(root)) == len(commits(twin))
        assert git(root, "log", "-1", "--format=%s").startswith(episode_id)
    # the default worker is the caller's parent (host:ppid): this test, both ways
    entry = json.loads(hystate(twin, "show", episode_id, "--json").stdout)["history"][-1]
    assert entry["by"].endswith(f":{os.getpid()}")


def test_the_callers_environment_and_folder_are_the_commands(
    repo: Path, episode_id: str, warm: Warm, tmp_path: Path
) -> None:
    home = tmp_path / "other-home"
    home.mkdir()
    (home / ".gitconfig").write_text("[user]\n\tname = Home Person\n\temail = home@example.org\n")
    env: dict[str, str | None] = {"HOME": str(home), "GIT_CONFIG_GLOBAL": None}
    proc = hystate(repo, "advance", episode_id, "downloading", warm=warm, env=env)
    assert proc.returncode == 0, proc.stderr
    assert git(repo, "log", "-1", "--format=%an <%ae>").strip() == "Home Person <home@example.org>"
    listed = json.loads(hystate(repo, "list", "--json").stdout)
    other = next(e["episode_id"] for e in listed if e["episode_id"] != episode_id)
    env = {"HYSTATE_WORKER": "dl-env", "GIT_AUTHOR_NAME": "Author Env"}
    proc = hystate(repo, "advance", other, "downloading", warm=warm, env=env)
    assert proc.returncode == 0, proc.stderr
    assert git(repo, "log", "-1", "--format=%an").strip() == "Author Env"
    shown = json.loads(hystate(repo, "show", other, "--json").stdout)
    assert shown["history"][-1]["by"] == "dl-env"
    # the folder: found from a subfolder as in-process, refused outside any repository alike
    same(repo / "processed", warm, "show", episode_id)
    outside = tmp_path / "outside"
    outside.mkdir()
    refused = same(outside, warm, "status")
    assert refused.returncode == 7
    assert served(warm) == 4


def held_lock(repo: Path, episode_id: str) -> subprocess.Popen[bytes]:
    """A process holding ``episode_id``'s lock until killed (an advance waits for it)."""
    lock = repo / "processed" / ".locks" / f"{episode_id}.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from hystate.core.locks import StateLock; l = StateLock(sys.argv[1]);"
         " l.acquire(); print('held', flush=True); time.sleep(600)", str(lock)],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
    return holder


def waiting(repo: Path, warm: Warm, *args: str) -> subprocess.Popen[bytes]:
    """A served command, returned once its child runs it (the server counted it)."""
    client = subprocess.Popen(
        [*CLIENT, *args], cwd=repo, env=_env(warm), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    while served(warm) < 1:
        assert client.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    return client


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_reaches_the_command(
    repo: Path, episode_id: str, warm: Warm, sig: signal.Signals
) -> None:
    head = commits(repo)
    path = next((repo / "processed").rglob(f"{episode_id}.yaml"))
    before = path.read_bytes()
    holder = held_lock(repo, episode_id)
    try:
        client = waiting(repo, warm, "advance", episode_id, "downloading")
        client.send_signal(sig)
        _out, err = client.communicate(timeout=60)
    finally:
        holder.kill()
        holder.wait()
    assert client.returncode == 130, err
    assert err == b"hystate: interrupted\n"
    assert commits(repo) == head
    assert path.read_bytes() == before
    assert settled(warm.pid, 0) == []


def test_a_client_killed_takes_its_command_with_it(repo: Path, episode_id: str, warm: Warm) -> None:
    holder = held_lock(repo, episode_id)
    locks = repo / "processed" / ".locks"
    try:
        client = waiting(repo, warm, "advance", episode_id, "downloading")
        (child,) = settled(warm.pid, 1)
        client.kill()
        client.wait()
        assert gone(child)
        assert settled(warm.pid, 0) == []
        assert sorted(p.name for p in locks.iterdir() if p.suffix == ".lock") == [
            f"{episode_id}.lock"  # the holder's own, nothing of the killed command's
        ]
    finally:
        holder.kill()
        holder.wait()
    assert hystate(repo, "advance", episode_id, "downloading", warm=warm).returncode == 0


def test_a_server_killed_leaves_commands_to_run_in_process(
    repo: Path, episode_id: str, warm: Warm
) -> None:
    kill(warm.pid)
    here = hystate(repo, "show", episode_id)
    there = hystate(repo, "show", episode_id, warm=warm)
    assert (there.returncode, there.stdout, there.stderr) == (0, here.stdout, here.stderr)


def test_code_changed_on_disk_stops_the_server(
    repo: Path, episode_id: str, folder: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "installed"
    shutil.copytree(
        REPO_ROOT / "hystate", copy / "hystate", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copytree(REPO_ROOT / "schema", copy / "schema")
    server = start(folder, env={"PYTHONPATH": str(copy)})
    try:
        assert hystate(repo, "show", episode_id, warm=server).returncode == 0
        assert served(server) == 1
        module = copy / "hystate" / "cli" / "reading.py"
        later = module.stat().st_mtime_ns + 5_000_000_000
        os.utime(module, ns=(later, later))
        proc = hystate(repo, "show", episode_id, warm=server)
        assert proc.returncode == 0, proc.stderr
        assert episode_id.encode() in proc.stdout
        assert gone(server.pid)  # it stopped: a server never runs code older than the disk's
        assert not server.socket.exists()
    finally:
        kill(server.pid)


def test_commands_off_the_list_run_in_process(repo: Path, warm: Warm) -> None:
    proc = hystate(repo, "validate", warm=warm)
    assert proc.returncode == 0, proc.stderr
    assert hystate(repo, "--help", warm=warm).returncode == 0
    assert served(warm) == 0


def test_an_untrusted_socket_folder_is_not_used(
    repo: Path, episode_id: str, warm: Warm, tmp_path: Path
) -> None:
    link = tmp_path / "link"
    link.symlink_to(warm.socket.parent)
    proc = hystate(repo, "show", episode_id, warm=link / "warm.sock")
    assert proc.returncode == 0, proc.stderr
    assert served(warm) == 0


def test_start_refuses_a_folder_others_could_use(tmp_path: Path) -> None:
    runtime = tmp_path / "run"
    (runtime / "hystate").mkdir(parents=True)
    (runtime / "hystate").chmod(0o755)
    proc = hystate(tmp_path, "warm", "start", env={"XDG_RUNTIME_DIR": str(runtime)})
    assert proc.returncode == 2
    assert proc.stderr.decode().splitlines() == [
        f"hystate: error: refusing the socket folder: {runtime}/hystate has mode 0755, not 0700"
    ]
    (runtime / "hystate").rmdir()
    (runtime / "elsewhere").mkdir(mode=0o700)
    (runtime / "hystate").symlink_to(runtime / "elsewhere")
    proc = hystate(tmp_path, "warm", "start", env={"XDG_RUNTIME_DIR": str(runtime)})
    assert proc.returncode == 2
    assert proc.stderr.decode() == (
        f"hystate: error: refusing the socket folder: {runtime}/hystate is a symlink\n"
    )
    if os.getuid() == 0:
        theirs = tmp_path / "theirs"
        theirs.mkdir(mode=0o700)
        os.chown(theirs, 65534, 65534)
        target = theirs / "warm.sock"
    else:
        target = Path("/warm.sock")  # the root folder is root's
    proc = hystate(tmp_path, "warm", "start", "--socket", str(target))
    assert proc.returncode == 2
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1 and "not to you" in lines[0], lines


def test_status_and_stop(repo: Path, folder: Path) -> None:
    server = start(folder)
    try:
        line = hystate(folder, "warm", "status", warm=server)
        assert line.returncode == 0
        text = line.stdout.decode()
        assert text.count("\n") == 1 and "serves commands run here" in text, text
        again = hystate(folder, "warm", "start", "--socket", str(server.socket))
        assert again.returncode == 0 and f"pid {server.pid}" in again.stderr.decode()
        stopped = hystate(folder, "warm", "stop", warm=server)
        assert stopped.returncode == 0
        assert stopped.stdout == b"unset HYSTATE_WARM;\n"
        assert gone(server.pid)
        assert not server.socket.exists()
        none = hystate(folder, "warm", "status", "--json", warm=server)
        assert none.returncode == 1
        assert json.loads(none.stdout) == {"running": False, "socket": str(server.socket)}
    finally:
        kill(server.pid)


def test_garbage_on_the_socket_runs_nothing(warm: Warm) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(warm.socket))
        sock.sendall(b"\x00\x00\x00\x05garbage")
        heard = b""
        try:
            while chunk := sock.recv(100):
                heard += chunk
        except ConnectionResetError:
            pass  # the child hung up on what it had not read
    assert b"ready" not in heard
    assert served(warm) == 0


# Ctrl-C at a chosen import (tests/hostile/test_signals.py's way), through the launcher
EARLY = r"""
import os, signal, sys
trigger = sys.argv.pop(1)

def hook(event, args):
    if event == "import" and args[0] == trigger:
        os.kill(os.getpid(), signal.SIGINT)

sys.addaudithook(hook)
sys.argv[0] = "hystate"
from hystate.launcher import main
main()
"""


@pytest.mark.parametrize(
    ("trigger", "served_by"),
    [("hystate.cli.app", None), ("hystate.core.warmwire", "warm"), ("click", "warm")],
)
def test_ctrl_c_before_the_command_is_one_line_and_130(
    repo: Path, episode_id: str, warm: Warm, trigger: str, served_by: str | None
) -> None:
    """In-process while hystate.cli imports, or in the client before the server took the
    command (warmwire), or not served after all (click: a command off the list)."""
    args = ["advance", episode_id, "downloading"] if trigger != "click" else ["validate"]
    env = _env(warm if served_by else None)
    proc = subprocess.run(
        [sys.executable, "-c", EARLY, trigger, *args], cwd=repo, env=env, capture_output=True
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (130, b"", b"hystate: interrupted\n")
    assert served(warm) == 0
    assert b"\nstage: discovered\n" in hystate(repo, "show", episode_id).stdout


@pytest.mark.parametrize(
    ("args", "command"),
    [
        (["advance", "x", "downloading"], "advance"),
        (["-v", "--state-dir", "elsewhere", "show", "x"], "show"),
        (["--state-dir=elsewhere", "--verbose", "status"], "status"),
        (["--help"], None),
        (["--version"], None),
        (["--state-dir"], None),
        ([], None),
    ],
)
def test_the_command_is_found_after_the_groups_options(
    args: list[str], command: str | None
) -> None:
    from hystate.launcher import HOT, command_of

    assert command_of(args) == command
    assert {"advance", "status", "list", "show", "next", "heartbeat"} <= HOT
    assert not HOT & {"init", "discover", "serve", "sync", "fsck", "warm", "events", "import"}


def fake_server(path: Path, after_go: bytes) -> threading.Thread:
    """A same-user socket that takes one command ("ready"), then sends ``after_go``."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def serve() -> None:
        conn, _ = listener.accept()
        with conn, listener:
            for fd in socket.recv_fds(conn, 1, 8)[1]:
                os.close(fd)  # the client's stdout and stderr: its reader waits for their end
            message(conn)
            conn.sendall(wire.encode(("ready",)))
            assert message(conn) == ("go",)
            conn.sendall(after_go)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def message(conn: socket.socket) -> object:
    size = int.from_bytes(conn.recv(4, socket.MSG_WAITALL), "big")
    return marshal.loads(conn.recv(size, socket.MSG_WAITALL))


@pytest.mark.parametrize(
    "after_go",
    [
        wire.encode(("exit", "boom")),
        wire.encode(("wait", -99)),
        wire.encode(("exit", 1 << 40)),
        wire.encode(["exit", 0]),
        b"\xff" * 8,
        b"",
    ],
)
def test_a_bad_answer_after_go_is_one_line_and_7(folder: Path, after_go: bytes) -> None:
    path = folder / "fake.sock"
    thread = fake_server(path, after_go)
    proc = hystate(folder, "status", warm=path)
    thread.join(30)
    assert proc.returncode == 7
    assert proc.stdout == b""
    assert proc.stderr == (
        b"hystate: error: the warm server sent no valid exit status (the command's outcome "
        b"is unknown; check with hystate show/status)\n"
    )


# a client that is told "ready" and hangs up without "go"
NO_GO = """
import os, sys
from hystate import launcher
from hystate.core import warmwire as wire
from hystate.core.locks import pid_alive
sock = wire.connect(sys.argv[1], 30)
wire.send_fds(sock, [os.open(".", os.O_RDONLY)])
wire.send(sock, launcher._request([None, None, None], 0o022, {}))
print(wire.recv(sock))
sock.close()
"""


def test_only_commands_run_are_counted(repo: Path, warm: Warm) -> None:
    """Pings, refusals and a client that hangs up after "ready" are not commands served."""
    refused = hystate(repo, "status", warm=warm, env={"PYTHONWARNINGS": "ignore"})
    assert refused.returncode == 0, refused.stderr
    asked = subprocess.run(
        [sys.executable, "-c", NO_GO, str(warm.socket)],
        cwd=repo,
        env=_env(None),
        capture_output=True,
        timeout=120,
    )
    assert asked.stdout == b"('ready',)\n", asked.stderr
    assert served(warm) == 0
    assert hystate(repo, "status", warm=warm).returncode == 0
    assert served(warm) == 1
    assert served(warm) == 1


def test_starts_at_once_all_print_the_line(folder: Path) -> None:
    path = folder / "warm.sock"
    starts = [
        subprocess.Popen(
            [*CLIENT, "warm", "start", "--socket", str(path)],
            cwd=folder,
            env=_env(None),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(4)
    ]
    results = [(p.communicate(timeout=120), p.returncode) for p in starts]
    pids = {int(m) for (_, err), _ in results for m in re.findall(rb"\(pid (\d+)\)", err)}
    try:
        for (out, err), code in results:
            assert code == 0, err
            assert out.decode() == f"HYSTATE_WARM={path}; export HYSTATE_WARM;\n"
        assert sum(b"warm server started" in err for (_, err), _ in results) == 1
        assert len(pids) == 1
    finally:
        for pid in pids:
            kill(pid)


def test_stop_during_a_command_says_the_server_still_runs(
    repo: Path, episode_id: str, warm: Warm
) -> None:
    holder = held_lock(repo, episode_id)
    try:
        client = waiting(repo, warm, "advance", episode_id, "downloading")
        stopped = hystate(repo, "warm", "stop", warm=warm)
        assert stopped.returncode == 1, stopped.stderr
        assert stopped.stdout == b"unset HYSTATE_WARM;\n"
        assert b"is still running" in stopped.stderr
        assert pid_alive(warm.pid)
        assert not warm.socket.exists()
    finally:
        holder.kill()
        holder.wait()
    _out, err = client.communicate(timeout=120)
    assert client.returncode == 0, err
    assert gone(warm.pid)


def test_a_served_command_leaves_the_cache_as_in_process(repo: Path, warm: Warm) -> None:
    """The child closes its SQLite connections as the interpreter's end would: no state.db-wal
    nor -shm left behind."""
    caches = repo / ".git" / "hystate"
    for how in (None, warm):
        shutil.rmtree(caches, ignore_errors=True)
        proc = hystate(repo, "status", warm=how)
        assert proc.returncode == 0, proc.stderr
        assert [p.name for p in caches.rglob("state.db*")] == ["state.db"]
    assert served(warm) == 1


def warmed(warm: Warm) -> int:
    """The trees the server holds parsed, once it has none left to parse (it parses between
    requests; a status request is one, so it is asked until two answers agree)."""
    last = -1
    for _ in range(200):
        count = int(status(warm)["trees"])  # type: ignore[call-overload]
        if count == last and count > 0:
            return count
        last = count
        time.sleep(0.05)
    return last


def test_the_trees_parsed_ahead_are_the_heads_and_never_stale(
    repo: Path, manager: StateManager, warm: Warm
) -> None:
    """After a served command the server parses the trees of that repository's HEAD; commits
    made meanwhile (by git, in-process) change nothing of what a served command finds, as a
    tree parsed ahead is the content of its sha."""
    first, second, third, fourth = sorted(p.stem for p in manager.store.iter_paths())[:4]
    done = hystate(repo, "advance", first, "downloading", warm=warm)
    assert done.returncode == 0, done.stderr
    assert warmed(warm) == len(git(repo, "ls-tree", "-r", "-d", "HEAD").splitlines()) + 1
    assert list(Path(f"{warm.socket}.ahead").iterdir()) == []  # the report was taken
    # HEAD moves under the server: in-process, and by git itself (a file of the same folder)
    assert hystate(repo, "advance", second, "downloading").returncode == 0
    path = next(repo.rglob(f"{third}.yaml")).relative_to(repo)
    text = (repo / path).read_text()
    (repo / path).write_text(re.sub(r"(?m)^title: .*$", "title: Renamed by hand", text, count=1))
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-am", "by hand")
    there = hystate(repo, "advance", third, "downloading", warm=warm)
    assert there.returncode == 0, there.stderr
    assert served(warm) == 2
    head = git(repo, "show", f"HEAD:{path}")
    assert "title: Renamed by hand" in head and "stage: downloading" in head
    warmed(warm)  # this HEAD's, now: the next command takes its trees from the server
    assert hystate(repo, "advance", fourth, "downloading", warm=warm).returncode == 0
    assert served(warm) == 3
    for eid in (first, second, fourth):
        shown = json.loads(hystate(repo, "show", eid, "--json").stdout)
        assert shown["stage"] == "downloading"
    assert git(repo, "status", "--porcelain") == ""
    assert "error" not in git(repo, "fsck", "--no-dangling", "--no-progress").lower()


def test_a_childs_report_is_a_file_the_server_takes(tmp_path: Path) -> None:
    """A child writes what its command found to <socket>.ahead/<pid> once the command ended
    (no descriptor of the server's is open during the command); the server reads and removes
    it when it reaps the child, and empties the folder when it starts."""
    from hystate.cli import warmahead
    from hystate.git.locate import FOUND, locate
    from hystate.git.settings import READ

    root = tmp_path / "r"
    root.mkdir()
    git(root, "init", "-q")
    folder = tmp_path / "warm.sock.ahead"
    folder.mkdir(mode=0o700)
    (folder / "123").write_bytes(b"a killed server's")
    assert warmahead.prepare(str(folder)) == str(folder)
    assert list(folder.iterdir()) == []
    FOUND.clear()
    READ.clear()  # what in-process commands of other tests read: not this report's
    try:
        where = locate(root)
        warmahead.report(str(folder))
    finally:
        FOUND.clear()
    data = (folder / str(os.getpid())).read_bytes()
    assert [kind for kind, _ in warmahead.messages(data)] == [warmahead.REPORT]
    assert list(warmahead.messages(data[:-1])) == []  # a cut message is not taken
    warmer = warmahead.Warmer()
    warmer.take(str(folder), os.getpid())
    repo = (str(where.git_dir), str(where.common_dir), str(where.objects), str(where.index))
    assert list(warmer.repos) == [repo]
    assert list(folder.iterdir()) == []
    os.chmod(folder, 0o755)  # others could read it: no reports
    assert warmahead.prepare(str(folder)) is None


def test_the_git_config_handed_on_is_never_stale(
    repo: Path, manager: StateManager, warm: Warm
) -> None:
    """A served command's ``git config --list`` is handed to the next ones by the server; a
    config changed since is read again, and one with includes (files whose changes the stamps
    do not see) is never handed on, as a new process reads it every time."""
    first, second, third, fourth = sorted(p.stem for p in manager.store.iter_paths())[:4]
    included = repo.parent / "more.cfg"

    def advance(eid: str) -> str:
        time.sleep(2.1)  # the config files' stamps settle (filestamp.RACY_NS): sharing is on
        done = hystate(repo, "advance", eid, "downloading", warm=warm)
        assert done.returncode == 0, done.stderr
        for _ in range(200):  # the server takes the child's report once the command ended
            if status(warm)["configs"]:
                break
            time.sleep(0.05)
        return git(repo, "log", "-1", "--format=%an").strip()

    advance(first)
    assert status(warm)["configs"] == 1
    git(repo, "config", "user.name", "Renamed Person")
    assert advance(second) == "Renamed Person"
    included.write_text("[user]\n\tname = Included Person\n")
    git(repo, "config", "include.path", str(included))
    assert advance(third) == "Included Person"
    included.write_text("[user]\n\tname = Other Person\n")
    assert advance(fourth) == "Other Person"
    assert served(warm) == 4


def test_an_index_read_ahead_is_used_only_while_it_is_the_index(
    repo: Path, manager: StateManager, warm: Warm
) -> None:
    """The server reads the index ahead (bytes, entries, SHA-1 states); a served command uses
    it only while the index's stamp is the same: a file the person staged meanwhile stays
    staged, and every index written is one git reads as its own."""
    first, second, third = sorted(p.stem for p in manager.store.iter_paths())[:3]
    assert hystate(repo, "advance", first, "downloading", warm=warm).returncode == 0
    for _ in range(200):  # the server reads it once the command has ended
        if status(warm)["indexes"]:
            break
        time.sleep(0.05)
    assert status(warm)["indexes"] == 1
    assert hystate(repo, "advance", second, "downloading", warm=warm).returncode == 0
    assert git(repo, "status", "--porcelain") == ""
    (repo / "notes.txt").write_text("staged by hand\n")
    git(repo, "add", "notes.txt")  # the index changes under the server's copy
    assert hystate(repo, "advance", third, "downloading", warm=warm).returncode == 0
    assert git(repo, "status", "--porcelain") == "A  notes.txt\n"
    assert "stage: downloading" in git(
        repo, "show", f"HEAD:{next(repo.rglob(third + '.yaml')).relative_to(repo)}"
    )
    git(repo, "update-index", "--really-refresh")  # git reads (and checks) the index
    assert served(warm) == 3


def test_a_tree_gone_from_git_is_missing_served_too(
    repo: Path, manager: StateManager, warm: Warm
) -> None:
    """A tree the server parsed ahead whose loose object was deleted since: a served command
    finds it missing as an in-process one does (exit 7), and makes no commit on it."""
    first, second = sorted(p.stem for p in manager.store.iter_paths())[:2]
    done = hystate(repo, "advance", first, "downloading", warm=warm)
    assert done.returncode == 0, done.stderr
    warmed(warm)
    year = next(p for p in repo.rglob(f"{second}.yaml")).parent.name
    sha = git(repo, "rev-parse", f"HEAD:processed/{year}").strip()
    (repo / ".git" / "objects" / sha[:2] / sha[2:]).unlink()
    shutil.rmtree(repo / ".git" / "hystate" / "cache", ignore_errors=True)
    head = git(repo, "rev-parse", "HEAD")
    here = hystate(repo, "advance", second, "downloading")
    there = hystate(repo, "advance", second, "downloading", warm=warm)
    assert (there.returncode, there.stderr) == (here.returncode, here.stderr) == (7, here.stderr)
    assert sha.encode() in here.stderr
    assert git(repo, "rev-parse", "HEAD") == head
