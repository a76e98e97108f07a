"""The floor: a bare ASGI app that reads the request body and answers a constant V2 JSON.

uvicorn floor_app:app --loop uvloop --http httptools --no-access-log --lifespan off
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["app"]

Message = MutableMapping[str, Any]

BODY = (
    b'{"model_name":"floor","outputs":[{"name":"label","shape":[1],"datatype":"INT64","data":[1]}]}'
)
HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(BODY)).encode()),
]


async def app(
    scope: Message,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    """Drain the request, answer the constant."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = bool(message.get("more_body", False))
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
