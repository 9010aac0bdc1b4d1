"""What one hostile client costs a real `hystate serve` process (its RSS from /proc, its open
file descriptors), on a repository of --episodes episodes:

    big body       one POST /graphql declaring and sending --body-mb MB (refused at 64 KiB)
    huge file      GET of the page of an episode whose file is --file-mb MB (committed)
    idle streams   --streams connections to /events that never read: the descriptors held,
                   and whether a new client still gets its stream
    slowloris      --streams connections that never finish their request head: how many are
                   still open after 15 s

    python bench/serve_attacks.py
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import build_repo, emit, episode_ids, git, isolate_git, machine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from tests.harness.serve import HYSTATE, free_port


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def big_body(port: int, megabytes: int) -> str:
    size = megabytes << 20
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        head = (
            "POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {size}\r\n\r\n"
        )
        sock.sendall(head.encode())
        block, sent = b" " * (1 << 20), 0
        try:
            while sent < size:
                sock.sendall(block)
                sent += len(block)
        except OSError:
            pass  # refused and closed before the end: what is wanted
        try:
            return sock.recv(100).split(b"\r\n")[0].decode()
        except OSError as exc:
            return type(exc).__name__


def connections(port: int, sent: bytes, count: int) -> list[socket.socket]:
    """``count`` raw connections to the server, each having sent ``sent`` and nothing more."""
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(sent)
        socks.append(sock)
    return socks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--body-mb", type=int, default=400)
    parser.add_argument("--file-mb", type=int, default=100)
    parser.add_argument("--streams", type=int, default=700)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    isolate_git()
    result: dict[str, object] = {"machine": machine()}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "repo"
        build_repo(root, args.episodes, mixed=True)
        eid = episode_ids(args.episodes)[0]
        path = next((root / "processed").glob(f"*/{eid}.yaml"))
        path.write_bytes(path.read_bytes() + b"#" + b"A" * (args.file_mb << 20) + b"\n")
        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", "a huge file")
        port = free_port()
        proc = subprocess.Popen(
            [*HYSTATE, "serve", "--port", str(port), "--reports-every", "0"],
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(f"{url}/api/status", timeout=10).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
                if time.monotonic() > deadline:
                    raise SystemExit("the server did not start")
            result["rss_start_mb"] = rss_kb(proc.pid) // 1024
            result["big_body_answer"] = big_body(port, args.body_mb)
            result["rss_after_big_body_mb"] = rss_kb(proc.pid) // 1024
            page = httpx.get(f"{url}/episodes/{eid}", timeout=120)
            result["huge_file_page_mb"] = round(len(page.content) / (1 << 20), 2)
            result["rss_after_huge_file_mb"] = rss_kb(proc.pid) // 1024
            streams = connections(
                port, b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", args.streams
            )
            time.sleep(3)
            result["fds_with_idle_streams"] = fds(proc.pid)
            with (
                httpx.Client(timeout=30) as http,
                http.stream("GET", f"{url}/events") as stream,
            ):
                lines = stream.iter_lines()
                result["new_client_gets_hello"] = any(
                    line.startswith("event: hello")
                    for _, line in zip(range(6), lines, strict=False)
                )
            for sock in streams:
                sock.close()
            # request heads that never end (slowloris)
            lorises = connections(port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n", args.streams)
            time.sleep(2)
            result["fds_with_slowloris"] = fds(proc.pid)
            time.sleep(13)
            result["fds_slowloris_after_15s"] = fds(proc.pid)
            for sock in lorises:
                sock.close()
            result["rss_end_mb"] = rss_kb(proc.pid) // 1024
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    emit(result, args.json)


if __name__ == "__main__":
    main()
