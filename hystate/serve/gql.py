"""The read-only GraphQL endpoint (Strawberry): the status, a page of episodes and one episode
with its history, named as the rest of hystate's JSON (``episode_id``, ``worker``, ``at``, no
camel case). No mutations (the schema has none), no subscriptions, no IDE (it would load
scripts from elsewhere). Limits refuse a query before it runs: depth, tokens, aliases; a page
is at most ``MAX_PER_PAGE`` episodes."""

from __future__ import annotations

import json
import logging
from typing import Any

import strawberry
from anyio import to_thread
from graphql import GraphQLError
from strawberry.asgi import GraphQL
from strawberry.extensions import MaxAliasesLimiter, MaxTokensLimiter, QueryDepthLimiter
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext, Info

from hystate.core.errors import HystateError
from hystate.serve.readmodel import PER_PAGE, ReadModel

# Depth 2 (counted from 0 at the top field) allows one episode with its history, and a page
# of episodes without: a page with each one's history would be a git log per episode.
MAX_DEPTH, MAX_TOKENS, MAX_ALIASES = 2, 1000, 10


def _model(info: Info[Any, Any]) -> ReadModel:
    model: ReadModel = info.context["model"]
    return model


@strawberry.type
class StageCount:
    stage: str
    count: int


@strawberry.type
class Status:
    head: str | None
    total: int
    completion_percentage: float | None
    estimated_completion: str | None
    eta_p50: str | None
    eta_p90: str | None
    counts: list[StageCount]


@strawberry.type
class HistoryEntry:
    at: str | None
    from_stage: str | None = strawberry.field(name="from")
    to_stage: str | None = strawberry.field(name="to")
    worker: str | None
    commit: str | None
    author: str | None
    subject: str | None


@strawberry.type
class Episode:
    episode_id: str
    title: str
    date: str
    stage: str
    status_message: str | None
    last_updated: str
    failed_stage: str | None
    error_count: int
    last_error: str | None

    @strawberry.field
    async def history(self, info: Info[Any, Any]) -> list[HistoryEntry]:
        rows = await to_thread.run_sync(_model(info).history, self.episode_id)
        return [
            HistoryEntry(
                at=r.get("at"),
                from_stage=r.get("from"),
                to_stage=r.get("to"),
                worker=r.get("worker"),
                commit=r.get("commit"),
                author=r.get("author"),
                subject=r.get("subject"),
            )
            for r in rows
        ]


@strawberry.type
class EpisodePage:
    total: int
    page: int
    per_page: int
    pages: int
    items: list[Episode]


def _episode(row: dict[str, Any]) -> Episode:
    return Episode(**{k: row[k] for k in Episode.__annotations__ if k in row})


@strawberry.type
class Query:
    @strawberry.field
    async def status(self, info: Info[Any, Any]) -> Status:
        data = await to_thread.run_sync(_model(info).dashboard)
        return Status(
            head=data.get("head"),
            total=data["total"],
            completion_percentage=data.get("completion_percentage"),
            estimated_completion=data.get("estimated_completion"),
            eta_p50=data.get("eta_p50"),
            eta_p90=data.get("eta_p90"),
            counts=[StageCount(stage=s, count=n) for s, n in data["counts"].items()],
        )

    @strawberry.field
    async def episodes(
        self,
        info: Info[Any, Any],
        stage: str | None = None,
        year: str | None = None,
        search: str | None = None,
        page: int = 1,
        per_page: int = PER_PAGE,
    ) -> EpisodePage:
        model = _model(info)

        def run() -> dict[str, Any]:
            return model.episodes(
                stage=stage, year=year, search=search, page=page, per_page=per_page
            )

        data = await to_thread.run_sync(run)
        return EpisodePage(
            total=data["total"],
            page=data["page"],
            per_page=data["per_page"],
            pages=data["pages"],
            items=[_episode(r) for r in data["items"]],
        )

    @strawberry.field
    async def episode(self, info: Info[Any, Any], episode_id: str) -> Episode | None:
        from hystate.core.errors import UnknownEpisode

        model = _model(info)

        def run() -> Episode | None:
            try:
                data = model.episode(episode_id, diffs=False)
            except UnknownEpisode:
                return None
            ep = data["state"]
            if not ep:
                return None
            errors = ep.get("error_history") or []
            return Episode(
                episode_id=ep["episode_id"],
                title=ep["title"],
                date=ep["date"],
                stage=ep["stage"],
                status_message=ep.get("status_message"),
                last_updated=ep["last_updated"],
                failed_stage=ep.get("failed_stage"),
                error_count=len(errors),
                last_error=errors[-1]["error"] if errors else None,
            )

        return await to_thread.run_sync(run)


log = logging.getLogger("hystate.serve")


class Schema(strawberry.Schema):
    """Strawberry logs every error with its traceback; here a bad query or a bad argument
    (the client is told) is not logged, and anything else is one line."""

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        for error in errors:
            cause = error.original_error
            if cause is not None and not isinstance(cause, HystateError):
                log.warning("graphql: %s: %s", type(cause).__name__, cause)


schema = Schema(
    query=Query,
    # the one vocabulary of hystate's JSON: episode_id, worker, at (not episodeId)
    config=StrawberryConfig(auto_camel_case=False),
    extensions=[
        lambda: QueryDepthLimiter(max_depth=MAX_DEPTH),
        lambda: MaxTokensLimiter(max_token_count=MAX_TOKENS),
        lambda: MaxAliasesLimiter(max_alias_count=MAX_ALIASES),
    ],
)


class ReadOnlyGraphQL(GraphQL[dict[str, Any], None]):
    def __init__(self, model: ReadModel) -> None:
        super().__init__(schema, graphql_ide=None, subscription_protocols=())
        self.model = model

    def decode_json(self, data: str | bytes) -> object:
        """JSON too deeply nested for the parser, bytes that are no text, or a value that is
        neither an object nor a (refused) batch are bad JSON (400), not a 500."""
        try:
            value = json.loads(data)
        except RecursionError:
            raise json.JSONDecodeError("nested too deeply", "", 0) from None
        except UnicodeDecodeError:
            raise json.JSONDecodeError("not UTF-8", "", 0) from None
        if not isinstance(value, (dict, list)):
            raise json.JSONDecodeError("a GraphQL request is a JSON object", "", 0)
        return value

    async def get_context(self, request: Any, response: Any) -> dict[str, Any]:
        return {"model": self.model, "request": request, "response": response}
