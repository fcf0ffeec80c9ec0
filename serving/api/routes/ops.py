"""The operator page, liveness and Prometheus metrics (public: see ``serving.api.deps.PUBLIC``)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, Response

from serving.api.deps import station

PAGE = Path(__file__).resolve().parents[1] / "static" / "operator.html"
router = APIRouter(tags=["ops"])


@router.get("/", response_class=HTMLResponse)
def page() -> str:
    """The operator page (it logs in through the API)."""
    return PAGE.read_text()


@router.get("/healthz")
def health(st=Depends(station)) -> dict:
    """Liveness: the process answers, and whether the inspection loop runs."""
    return {"ok": True, "running": st.state.running, "finished": st.state.finished}


@router.get("/metrics")
def metrics(st=Depends(station)) -> Response:
    """Prometheus text exposition."""
    return Response(st.metrics.render(), media_type="text/plain; version=0.0.4")
