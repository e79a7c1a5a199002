"""URL rules of the reference examples (wire-protocol.md §1)."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

BACKTEST_PATH = "/backtest"


def backtest_ws_url(host_or_url: str) -> str:
    """Bare host -> ``wss://host/backtest``; ``ws://``/``wss://`` kept, path completed."""
    text = host_or_url.strip()
    if not text:
        raise ValueError("url: empty")
    if "://" not in text:
        text = f"wss://{text}"
    parts = urlsplit(text)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"url: scheme must be ws or wss, got {parts.scheme!r}")
    if not parts.netloc:
        raise ValueError(f"url: no host in {host_or_url!r}")
    path = parts.path.rstrip("/")
    if not path.endswith(BACKTEST_PATH):
        path += BACKTEST_PATH
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def resolve_rpc_url(control_url: str, rpc_endpoint: str) -> str:
    """An absolute http(s) RPC URL; a path resolves against the control URL's host."""
    if "://" in rpc_endpoint:
        return rpc_endpoint
    control = urlsplit(control_url)
    scheme = "http" if control.scheme == "ws" else "https"
    path = rpc_endpoint if rpc_endpoint.startswith("/") else f"/{rpc_endpoint}"
    return urlunsplit((scheme, control.netloc, path, "", ""))


def pubsub_url(rpc_url: str) -> str:
    """PubSub URL = RPC URL with http -> ws, https -> wss."""
    parts = urlsplit(rpc_url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path, parts.query, ""))
