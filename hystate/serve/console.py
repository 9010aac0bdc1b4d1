"""The operator's console on the dashboard: a token login (a session cookie, HttpOnly and
SameSite=Strict), CSRF protection (a per-session token the page sends in ``X-CSRF-Token``, and
the ``Origin`` checked), the retry, skip and take-over actions (each shown as its dry run before
it is confirmed), and the read views an operator works from: the work in progress (holder,
stage, lease expiry, heartbeat age), each worker's timeline, and ``/metrics`` for Prometheus.

Take-over is for an episode whose worker is gone: it is failed with ``worker lost: <why>`` (as
``fsck --repair`` does), so retry hands it to the next worker; an episode whose lease is alive
is refused."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from hystate.core.errors import HystateError, UsageError
from hystate.core.model import ProcessingStage, check_id, now_utc, parse_time
from hystate.core.paths import read_bytes
from hystate.core.rules import Change
from hystate.engine import leases
from hystate.serve import actions
from hystate.serve.api import error_response, json_response, run, unexpected
from hystate.serve.pages import render

if TYPE_CHECKING:
    from hystate.manager import StateManager
    from hystate.serve.server import Server

S = ProcessingStage
COOKIE = "hystate_session"
SESSION_SECONDS = 12 * 3600
CONSOLE_ACTIONS = ("retry", "skip", "take-over")
ACTIVE = [s.value for s in ProcessingStage if s.is_active]
TIMELINE_DAYS = 7
TIMELINE_ROWS = 5000  # history entries read for the timelines, the newest


class Console:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.sessions: dict[str, float] = {}  # session id -> when it expires (monotonic)

    # -- sessions ---------------------------------------------------------------------------

    def session(self, request: Request) -> str | None:
        """The request's live session id, or None."""
        sid = request.cookies.get(COOKIE, "")
        expires = self.sessions.get(sid)
        if expires is None:
            return None
        if expires < time.monotonic():
            self.sessions.pop(sid, None)
            return None
        return sid

    def csrf(self, sid: str) -> str:
        token = self.server.token or ""
        return hmac.new(token.encode(), f"csrf:{sid}".encode(), hashlib.sha256).hexdigest()

    def context(self, request: Request) -> dict[str, Any]:
        """What a page needs to show the console: actions on, logged in, the CSRF token."""
        sid = self.session(request) if self.server.token is not None else None
        return {
            "enabled": self.server.token is not None,
            "operator": sid is not None,
            "csrf": self.csrf(sid) if sid else "",
        }

    async def login_page(self, request: Request) -> Response:
        if self.server.token is None:
            return render("error.html.j2", 403, message=DISABLED)
        return render("login.html.j2", next=_local(request.query_params.get("next")), error="")

    async def login(self, request: Request) -> Response:
        if self.server.token is None:
            return render("error.html.j2", 403, message=DISABLED)
        if not _same_origin(request):
            return render("error.html.j2", 403, message="a login from another site is refused")
        form = parse_qs((await request.body()).decode("utf-8", "replace"), max_num_fields=4)
        given = (form.get("token") or [""])[0].strip()
        target = _local((form.get("next") or ["/"])[0])
        if not hmac.compare_digest(given.encode(), self.server.token.encode()):
            return render("login.html.j2", 401, next=target, error="wrong token")
        now = time.monotonic()
        self.sessions = {s: t for s, t in self.sessions.items() if t > now}
        sid = secrets.token_urlsafe(32)
        self.sessions[sid] = now + SESSION_SECONDS
        response = RedirectResponse(target, 303)
        response.set_cookie(
            COOKIE, sid, max_age=SESSION_SECONDS, httponly=True, samesite="strict", path="/"
        )
        return response

    async def logout(self, request: Request) -> Response:
        sid = self.session(request)
        if sid is not None and _same_origin(request):
            self.sessions.pop(sid, None)
        response = RedirectResponse("/", 303)
        response.delete_cookie(COOKIE, path="/")
        return response

    # -- actions ----------------------------------------------------------------------------

    async def action(self, request: Request) -> Response:
        if self.server.token is None:
            return json_response({"error": DISABLED}, 403)
        sid = self.session(request)
        if sid is None:
            return json_response({"error": "log in first (/login)"}, 401)
        sent = request.headers.get("x-csrf-token", "")
        if not _same_origin(request) or not hmac.compare_digest(sent, self.csrf(sid)):
            return json_response({"error": "missing or wrong CSRF token"}, 403)
        name = request.path_params["action"]
        eid = request.path_params["episode_id"]
        if name not in CONSOLE_ACTIONS:
            return json_response({"error": f"unknown action {name!r}"}, 404)
        try:
            body = json.loads(await request.body() or b"{}")
        except (ValueError, RecursionError):
            return json_response({"error": "the body is not JSON"}, 400)
        if not isinstance(body, dict) or set(body) - {"dry_run", "reason"}:
            return json_response({"error": "the body is {dry_run: bool, reason: str}"}, 400)
        dry_run, reason = body.get("dry_run", True), body.get("reason")
        if not isinstance(dry_run, bool) or not isinstance(reason, str | None):
            return json_response({"error": "dry_run is true or false, reason a string"}, 400)
        model = self.server.model

        def act() -> dict[str, Any]:
            with model.lock:
                manager = model.manager
                if name == "take-over":
                    return (take_over_plan if dry_run else take_over)(manager, eid).as_dict()
                do = actions.plan if dry_run else actions.perform
                return do(manager, name, eid, reason).as_dict()

        return await run(act)

    # -- read views -------------------------------------------------------------------------

    async def in_progress(self, request: Request) -> Response:
        model = self.server.model
        return await run(lambda: in_progress(model.manager, datetime.now(UTC)))

    async def timeline(self, request: Request) -> Response:
        return await run(lambda: timeline(self.server, datetime.now(UTC)))

    async def workers_page(self, request: Request) -> Response:
        try:
            data = await to_thread.run_sync(lambda: timeline(self.server, datetime.now(UTC)))
        except HystateError as exc:
            return render("error.html.j2", 500, message=str(exc))
        except Exception as exc:
            return render("error.html.j2", 500, message=unexpected(exc))
        return render("workers.html.j2", data=data, console=self.context(request))

    async def metrics(self, request: Request) -> Response:
        from hystate.reports.prometheus import metrics_text

        model = self.server.model

        def text() -> bytes:
            model.refresh()
            with model.lock:
                return metrics_text(model.manager)

        try:
            body = await to_thread.run_sync(text)
        except HystateError as exc:
            return error_response(exc)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


DISABLED = "actions are disabled: start `hystate serve --allow-actions` with a token"


def _local(target: str | None) -> str:
    """A redirect target on this server only (a path, never ``//host`` or a URL)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _same_origin(request: Request) -> bool:
    """Not sent from another site: no ``Origin``, ``null`` (what a browser sends under this
    server's ``Referrer-Policy: no-referrer``), or this very host. (The actions' proof is the
    CSRF token; this refuses what a browser says came from elsewhere.)"""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "")


# -- take-over ----------------------------------------------------------------------------


def _lost_change(manager: StateManager, episode_id: str) -> tuple[Any, Change]:
    episode = manager.episode(check_id(episode_id))
    if not episode.stage.is_active:
        raise UsageError(f"{episode_id} is {episode.stage.value}: no worker holds it")
    lease = leases.current_lease(manager, episode)
    reason = None if lease is None else lease.stuck_reason(datetime.now(UTC))
    if reason is None:
        until = f" until {lease.expires_at}" if lease else ""
        raise UsageError(
            f"{episode_id}: worker {episode.worker or '?'} holds it and its lease is alive{until}"
        )
    return episode, Change(S.FAILED, now_utc(), manager.worker, error=f"worker lost: {reason}")


def take_over_plan(manager: StateManager, episode_id: str) -> actions.Plan:
    episode, change = _lost_change(manager, episode_id)
    return actions._preview(manager, "take-over", episode, change)


def take_over(manager: StateManager, episode_id: str) -> actions.Plan:
    planned = take_over_plan(manager, episode_id)
    result = leases.mark_lost(manager, episode_id, by=manager.worker)
    path = manager.path_of(episode_id)
    rel = manager.repo.relpath(path)
    before = manager.repo.git_bytes("show", f"{result.commit}^:{rel}", check=False)
    planned.to_stage, planned.commit, planned.dry_run = "failed", result.commit, False
    planned.diff = actions.unified(before, read_bytes(path), rel)
    return planned


# -- the work in progress and the workers' timelines ----------------------------------------


def in_progress(manager: StateManager, now: datetime) -> list[dict[str, Any]]:
    """Every episode in an active stage: who holds it, since when, its lease's expiry, how long
    ago its worker last showed a sign of life (a renewal, else entering the stage), and why it
    is stuck (None while the lease is alive)."""
    rows = []
    for episode in manager.list_episodes(ACTIVE):
        lease = leases.current_lease(manager, episode)
        if lease is None:
            continue
        beat = (lease.renewed_at or lease.entered_at).split(" ")[0]
        rows.append(
            {
                "episode_id": episode.episode_id,
                "title": episode.title,
                "stage": lease.stage,
                "worker": lease.worker,
                "since": lease.entered_at,
                "lease_expires_at": lease.expires_at,
                "heartbeat_at": beat,
                "heartbeat_age_seconds": round((now - parse_time(beat)).total_seconds(), 1),
                "stuck": lease.stuck_reason(now),
            }
        )
    rows.sort(key=lambda r: (r["stuck"] is None, r["since"]))
    return rows


def timeline(server: Server, now: datetime) -> dict[str, Any]:
    """Each worker's runs over the last days: a run starts when the worker moves an episode
    into an active stage and ends with the episode's next transition (its outcome), or is
    still open. Other transitions a worker made are points."""
    since = now.timestamp() - TIMELINE_DAYS * 86400
    rows = server.model.query(
        "SELECT episode_id, timestamp, from_stage, to_stage, json_extract(details, '$.by')"
        " FROM processing_log WHERE julianday(timestamp) >= julianday(?)"
        " ORDER BY julianday(timestamp) DESC, id DESC LIMIT ?",
        (datetime.fromtimestamp(since, UTC).isoformat(), TIMELINE_ROWS),
    )
    workers: dict[str, dict[str, Any]] = {}
    open_runs: dict[str, dict[str, Any]] = {}  # episode -> its run still waiting for an end
    for eid, at, _from, to, by in reversed(rows):
        ended = open_runs.pop(eid, None)
        if ended is not None:
            ended["end"], ended["outcome"] = at, to
        who = workers.setdefault(str(by or "?"), {"worker": str(by or "?"), "runs": [], "moves": 0})
        who["moves"] += 1
        who["last_at"] = at
        if to in ACTIVE:
            run_ = {"episode_id": eid, "stage": to, "start": at, "end": None, "outcome": None}
            who["runs"].append(run_)
            open_runs[eid] = run_
    listed = sorted(workers.values(), key=lambda w: w["last_at"], reverse=True)
    start = min((r[1] for r in rows), default=now.isoformat(timespec="seconds"))
    return {"from": start, "to": now.isoformat(timespec="seconds"), "workers": listed}
