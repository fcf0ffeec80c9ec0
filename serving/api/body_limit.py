"""A request-body size limit, enforced while the body streams in (pure ASGI middleware).

A ``Content-Length`` over the limit is answered 413 before a byte of the body is read; a body
without one (chunked) is counted as it arrives and cut off with 413 as soon as it passes the limit.
Nothing is buffered here, and uvicorn stops reading a socket whose body the app does not take,
so a 150 MB request costs the station no memory. Upload paths have a larger limit, and a body
over the normal limit is accepted there only from a logged-in engineer, checked before it is read.
"""

from __future__ import annotations

import json

from fastapi import HTTPException

from serving.api.auth import allowed


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes the limit (FastAPI answers an HTTPException as is)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over {limit} bytes; this station accepts at most {limit}",
                         headers={"Connection": "close"})


async def _answer(send, status: int, detail: str, extra: list | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *(extra or [])]})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """``limit`` bytes per request body; ``small`` for paths that need little (``{path: bytes}``), ``upload`` for
    path prefixes that take bundles (``{prefix: bytes}``, engineers only beyond ``limit``)."""

    def __init__(self, app, limit: int, small: dict[str, int] | None = None, upload: dict[str, int] | None = None) -> None:
        self.app, self.limit, self.small, self.upload = app, limit, small or {}, upload or {}

    def _limit(self, path: str) -> tuple[int, bool]:
        if path in self.small:
            return self.small[path], False
        for prefix, n in self.upload.items():
            if path.startswith(prefix):
                return n, True
        return self.limit, False

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit, upload = self._limit(scope["path"])
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                return await _answer(send, 400, "Content-Length is not a number")
            if n > limit:
                return await _answer(send, 413, f"request body of {n} bytes; this station accepts at most {limit}")
        big = int(length) > self.limit if length is not None else b"transfer-encoding" in headers
        if upload and big and not self._engineer(scope, headers):
            return await _answer(send, 401, "a large upload needs an engineer's login first: POST /api/login, then "
                                            "send 'Authorization: Bearer <token>'")
        seen = 0
        started = False

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge:
            if started:
                raise
            await _answer(send, 413, f"request body over {limit} bytes; this station accepts at most {limit}")

    @staticmethod
    def _engineer(scope, headers: dict) -> bool:
        auth = headers.get(b"authorization", b"").decode("latin-1")
        token = auth.split(" ", 1)[1] if auth.lower().startswith("bearer ") else None
        session = scope["app"].state.sessions.get(token) if "app" in scope else None
        return session is not None and allowed(session.role, "engineer")
