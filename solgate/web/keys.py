"""Every `web.AppKey` of the web app, typed, in one place."""

from __future__ import annotations

import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from solgate.config import Config
    from solgate.web.auth import Authenticator
    from solgate.web.model import ConsoleManager, PeerLogs
    from solgate.web.quota import Network, UserSlots

config_key: web.AppKey[Config] = web.AppKey("config")
manager_key: web.AppKey[ConsoleManager] = web.AppKey("manager")
auth_key: web.AppKey[Authenticator] = web.AppKey("auth")
websockets_key: web.AppKey[weakref.WeakSet[web.WebSocketResponse]] = web.AppKey("websockets")
data_dir_key = web.AppKey("data_dir", Path)
# Exact origins (scheme://host[:port]) allowed to open WebSockets besides the page's own host.
allowed_origins_key = web.AppKey("allowed_origins", frozenset)
# Seconds between WebSocket pings (a client that misses the pong is dropped); tests shorten it.
heartbeat_key = web.AppKey("ws_heartbeat", float)
# Password hashing and log reading each have their own threads (see solgate.web.limits);
# UserSlots and Network are solgate.web.quota's, beneath both.
login_executor_key: web.AppKey[ThreadPoolExecutor] = web.AppKey("login_executor")
log_executor_key: web.AppKey[ThreadPoolExecutor] = web.AppKey("log_executor")
log_slots_key: web.AppKey[UserSlots] = web.AppKey("log_slots")
# Peers whose X-Forwarded-For and X-Forwarded-Proto are believed ([server] trusted_proxies).
trusted_proxies_key: web.AppKey[tuple[Network, ...]] = web.AppKey("trusted_proxies")
# In a cluster: the other members' logs and panic bundles (absent without a cluster).
peer_logs_key: web.AppKey[PeerLogs] = web.AppKey("peer_search")
