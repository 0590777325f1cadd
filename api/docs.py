"""``GET /docs``: Swagger UI, served offline from the assets swagger-ui-py ships.

The page loads only this server's ``/docs/static/*`` and ``/openapi.json``; the badge that
Swagger UI would fetch from validator.swagger.io is turned off (``validatorUrl: null``). Like
every route but ``/health``, it needs a bearer token (API.md): a browser has to send the header
(a header-setting extension or a proxy).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from aiohttp import web

from api.edge import FileAnswer
from ledger.errors import NotFound

STATIC_DIR = Path(str(resources.files("swagger_ui") / "static"))
# Only the files the page uses, nothing else in the package directory, each with its media
# type stated here (not guessed from the machine's mime.types, so /openapi.json can list them).
ASSETS = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui-standalone-preset.js": "text/javascript",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}
CACHE_S = 86_400

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Ledger API</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css">
<link rel="icon" type="image/png" href="/docs/static/favicon-32x32.png" sizes="32x32">
<link rel="icon" type="image/png" href="/docs/static/favicon-16x16.png" sizes="16x16">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script src="/docs/static/swagger-ui-standalone-preset.js"></script>
<script>
window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    validatorUrl: null,
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "StandaloneLayout"
  });
};
</script>
</body>
</html>
"""


async def docs_page(request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html")


async def docs_asset(request: web.Request) -> FileAnswer:
    name = request.match_info["name"]
    if name not in ASSETS:
        raise NotFound(f"no asset {name!r}")
    return FileAnswer(
        STATIC_DIR / name,
        headers={"Cache-Control": f"private, max-age={CACHE_S}", "Content-Type": ASSETS[name]},
    )
