"""The HTML pages: the dashboard and a page per episode, rendered by Jinja2 with autoescape on
(everything from files is text, never markup). The data the dashboard's script starts from is
embedded as JSON with ``tojson`` (``<``, ``>``, ``&`` and ``'`` escaped), in a
``type="application/json"`` block the browser never runs; the script only ever sets
``textContent`` and attributes."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any

from anyio import to_thread
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from hystate.core.errors import HystateError, UnknownEpisode
from hystate.core.model import ProcessingStage
from hystate.serve import runlinks
from hystate.serve.api import unexpected

if TYPE_CHECKING:
    from hystate.serve.server import Server


@cache
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("hystate.serve", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    env.globals["run_links"] = runlinks.links
    return env


def render(template: str, code: int = 200, **values: Any) -> Response:
    html = environment().get_template(template).render(**values)
    return HTMLResponse(html, code)


class Pages:
    def __init__(
        self, server: Server, console: Callable[[Request], dict[str, Any]] | None = None
    ) -> None:
        self.server = server
        self.console = console or (lambda _request: {"enabled": False, "operator": False})

    async def dashboard(self, request: Request) -> Response:
        model = self.server.model

        def build() -> dict[str, Any]:
            return {"status": model.dashboard(), "page": model.episodes()}

        try:
            data = await to_thread.run_sync(build)
        except HystateError as exc:
            return render("error.html.j2", 500, message=str(exc))
        except Exception as exc:
            return render("error.html.j2", 500, message=unexpected(exc))
        return render(
            "dashboard.html.j2",
            status=data["status"],
            page=data["page"],
            initial=data,
            stages=[s.value for s in ProcessingStage],
            actions=self.server.token is not None,
            console=self.console(request),
        )

    async def episode(self, request: Request) -> Response:
        eid = request.path_params["episode_id"]
        try:
            data = await to_thread.run_sync(lambda: self.server.model.episode(eid))
        except UnknownEpisode as exc:
            return render("error.html.j2", 404, message=str(exc))
        except HystateError as exc:
            return render("error.html.j2", 400, message=str(exc))
        except Exception as exc:
            return render("error.html.j2", 500, message=unexpected(exc))
        return render(
            "episode.html.j2",
            data=data,
            actions=self.server.token is not None,
            console=self.console(request),
        )
