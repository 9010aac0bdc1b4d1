"""The JSON API and the event stream: ``/api/status``, ``/api/episodes`` (a page, filtered by
stage, year and text), ``/api/episodes/{id}`` and its ``/history``, ``/events`` (Server-Sent
Events, see ``feed``), and the actions ``POST /api/actions/{retry|skip}/{id}[?dry_run=1]``,
refused unless the server was started with them and the request carries the token."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from hystate.core.errors import (
    HystateError,
    IllegalTransition,
    InvalidData,
    LockBusy,
    UnknownEpisode,
    UsageError,
)
from hystate.serve import actions

if TYPE_CHECKING:
    from hystate.serve.server import Server

log = logging.getLogger("hystate.serve")
# InvalidData: a value the request gave (a reason too long) or a broken file; not a fault of
# the server's (500 is for those: git, the disk, a bug)
_STATUS = {
    UnknownEpisode: 404,
    UsageError: 400,
    IllegalTransition: 409,
    InvalidData: 422,
    LockBusy: 423,
}


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(data, ensure_ascii=False, allow_nan=False, indent=1)
    return Response(body, status, headers, media_type="application/json")


def unexpected(exc: Exception) -> str:
    """One line for an error that is not hystate's own (the repository moved away, the disk,
    a bug): logged without a traceback, and returned for the client."""
    text = f"{type(exc).__name__}: {exc}"
    log.error("%s", text)
    return text


def error_response(exc: HystateError) -> Response:
    status = next((code for cls, code in _STATUS.items() if isinstance(exc, cls)), 500)
    return json_response({"error": str(exc), "exit_code": exc.exit_code}, status)


async def run(call: Callable[[], Any]) -> Response:
    """``call`` in a worker thread (it reads SQLite or runs git); errors as JSON."""
    try:
        return json_response(await to_thread.run_sync(call))
    except HystateError as exc:
        return error_response(exc)
    except Exception as exc:
        return json_response({"error": unexpected(exc), "exit_code": 1}, 500)


def _int(request: Request, name: str, default: int) -> int:
    value = request.query_params.get(name)
    if value is None or value == "":
        return default
    if not (value.isascii() and value.isdigit()) or len(value) > 9:
        raise UsageError(f"{name} must be a positive whole number")
    return int(value)


_YES, _NO = ("", "1", "true", "yes", "on"), ("0", "false", "no", "off")
_BODY_KEYS = ("reason", "dry_run")


def _dry_run(value: str | None) -> bool:
    """``?dry_run`` with no value, or a yes, is a dry run; only a no (or none) acts."""
    if value is None or value.lower() in _NO:
        return False
    if value.lower() in _YES:
        return True
    raise UsageError(f"dry_run must be 1 or 0, not {value[:20]!r}")


async def _action_args(request: Request) -> tuple[bool, str | None]:
    """(dry run, reason) from the query and a JSON body; UsageError when unclear (an unknown
    key is refused, not ignored: a misspelt dry run must not act)."""
    dry_run = _dry_run(request.query_params.get("dry_run"))
    reason = request.query_params.get("reason")
    if not request.headers.get("content-type", "").startswith("application/json"):
        return dry_run, reason
    try:
        body = json.loads(await request.body() or b"{}")
    except (ValueError, RecursionError):  # nested too deeply for the parser
        raise UsageError("the body is not JSON") from None
    if not isinstance(body, dict) or set(body) - set(_BODY_KEYS):
        raise UsageError(f"the body is a JSON object with at most {' and '.join(_BODY_KEYS)}")
    if "dry_run" in body:
        if not isinstance(body["dry_run"], bool):
            raise UsageError("dry_run must be true or false")
        dry_run = dry_run or body["dry_run"]
    if reason is None and body.get("reason") is not None:
        reason = body["reason"]
        if not isinstance(reason, str):
            raise UsageError("reason must be a string")
    return dry_run, reason


class Api:
    def __init__(self, server: Server) -> None:
        self.server = server

    async def status(self, request: Request) -> Response:
        return await run(self.server.model.dashboard)

    async def episodes(self, request: Request) -> Response:
        q = request.query_params
        try:
            page, per_page = _int(request, "page", 1), _int(request, "per_page", 50)
        except UsageError as exc:
            return error_response(exc)
        return await run(
            lambda: self.server.model.episodes(
                stage=q.get("stage") or None,
                year=q.get("year") or None,
                search=q.get("q") or q.get("search") or None,
                page=page,
                per_page=per_page,
            )
        )

    async def episode(self, request: Request) -> Response:
        eid = request.path_params["episode_id"]
        return await run(lambda: self.server.model.episode(eid))

    async def history(self, request: Request) -> Response:
        eid = request.path_params["episode_id"]
        return await run(lambda: self.server.model.history(eid))

    async def events(self, request: Request) -> Response:
        feed = self.server.feed
        last_id = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
        return StreamingResponse(
            feed.stream(last_id),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def action(self, request: Request) -> Response:
        server = self.server
        if server.token is None:
            return json_response(
                {"error": "actions are disabled: start `hystate serve --allow-actions`"}, 403
            )
        if not actions.token_ok(server.token, request.headers.get("authorization")):
            return json_response(
                {"error": "missing or wrong token (Authorization: Bearer TOKEN)"},
                401,
                {"WWW-Authenticate": 'Bearer realm="hystate"'},
            )
        name = request.path_params["action"]
        eid = request.path_params["episode_id"]
        try:
            dry_run, reason = await _action_args(request)
        except UsageError as exc:
            return json_response({"error": str(exc)}, 400)
        if name not in actions.ACTIONS:
            return json_response({"error": f"unknown action {name!r}"}, 404)
        model = server.model

        def act() -> dict[str, Any]:
            with model.lock:
                do = actions.plan if dry_run else actions.perform
                return do(model.manager, name, eid, reason).as_dict()

        return await run(act)
