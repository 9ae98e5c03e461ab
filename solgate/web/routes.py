"""Every URL of the web app, in one table."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from solgate.web import api, fleet, forensics, views, ws

STATIC_DIR = Path(__file__).resolve().parents[2] / "static"


def setup_routes(app: web.Application, static_dir: Path = STATIC_DIR) -> None:
    app.router.add_get("/", views.consoles_page, name="consoles")
    app.router.add_get("/login", views.login_page, name="login")
    app.router.add_get("/favicon.ico", views.favicon)
    app.router.add_post("/login", views.login_submit)
    app.router.add_post("/logout", views.logout, name="logout")
    app.router.add_get("/consoles/{name}", views.console_page, name="console")
    app.router.add_get("/consoles/{name}/log", views.log_page, name="console_log")
    app.router.add_get("/events", views.events_page, name="events")
    app.router.add_get("/consoles/{name}/screen", forensics.screen_page, name="console_screen")
    app.router.add_get("/search", forensics.search_page, name="search")
    app.router.add_get("/bundles/{id}", forensics.bundle_page, name="bundle")

    app.router.add_get("/ws/consoles/{name}", ws.console_ws, name="console_ws")

    app.router.add_get("/api/consoles", api.list_consoles)
    app.router.add_get("/api/consoles/{name}", api.get_console)
    app.router.add_post("/api/consoles/{name}/break", api.post_break)
    app.router.add_post("/api/consoles/{name}/deactivate", api.post_deactivate)
    app.router.add_post("/api/consoles/{name}/power", api.post_power)
    app.router.add_get("/api/consoles/{name}/log", api.get_log)
    app.router.add_get("/api/events", api.get_events)
    app.router.add_get("/api/consoles/{name}/cast", forensics.get_cast)
    app.router.add_get("/api/search", forensics.get_search)
    app.router.add_get("/api/bundles/{id}", forensics.get_bundle)
    app.router.add_post("/api/fleet", fleet.post_fleet)
    app.router.add_get("/healthz", api.healthz)
    app.router.add_get("/metrics", api.metrics)

    app.router.add_static("/static/", static_dir, name="static", follow_symlinks=False)
