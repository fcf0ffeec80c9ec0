"""The operator page and its assets, liveness and Prometheus metrics (public: see ``serving.api.deps.PUBLIC``)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import HTMLResponse, Response

from serving.api.deps import station

STATIC = Path(__file__).resolve().parents[1] / "static"
ASSETS = {"session.js": "text/javascript", "operator.js": "text/javascript", "operator.css": "text/css", "setup.js": "text/javascript",
          "setup.css": "text/css"}
router = APIRouter(tags=["ops"])


@router.get("/", response_class=HTMLResponse)
def page() -> str:
    """The operator page (it logs in through the API)."""
    return (STATIC / "operator.html").read_text()


@router.get("/static/{name}", response_class=Response)
def asset(name: str) -> Response:
    """The page's script and style sheet (nothing else is served from the folder)."""
    if name not in ASSETS:
        raise HTTPException(404, f"no asset {name!r}")
    return Response((STATIC / name).read_bytes(), media_type=ASSETS[name])


@router.get("/healthz")
def health(st=Depends(station)) -> dict:
    """Liveness: the process answers, and whether the inspection loop runs."""
    return {"ok": True, "running": st.state.running, "finished": st.state.finished}


@router.get("/metrics")
def metrics(st=Depends(station)) -> Response:
    """Prometheus text exposition."""
    return Response(st.metrics.render(), media_type="text/plain; version=0.0.4")
