"""`/docs`: the OpenAPI description rendered by Swagger UI (from the swagger-ui-bundle package)."""

from __future__ import annotations

from pathlib import Path

import jinja2
from aiohttp import web
from swagger_ui_bundle import swagger_ui_path

_ASSETS = Path(str(swagger_ui_path))


def _render() -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(_ASSETS), autoescape=True)
    return env.get_template("index.j2").render(openapi_spec_url="/openapi.json")


async def docs_page(request: web.Request) -> web.Response:
    if not request.path.endswith("/"):
        raise web.HTTPPermanentRedirect("/docs/")
    return web.Response(text=_PAGE, content_type="text/html")


_PAGE = _render()


def add_routes(app: web.Application) -> None:
    app.router.add_get("/docs", docs_page)
    app.router.add_get("/docs/", docs_page)
    app.router.add_static("/docs", _ASSETS)
