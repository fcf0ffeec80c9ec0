"""The station API fuzzed from its own OpenAPI schema (schemathesis): no request, valid or malformed, gets a
server error, and every write endpoint refuses an anonymous request (401) and the operator role where it
needs an engineer (403). Against a real station app (a replay station, its evidence and audit log)."""

from __future__ import annotations

import time

import pytest
from fastapi.routing import APIRoute

from helpers import station_config
from serving.api import create_app
from serving.api.deps import PUBLIC
from serving.station.runtime import Station

schemathesis = pytest.importorskip("schemathesis", reason="the fuzz test needs schemathesis (dev extra)")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402

pytestmark = pytest.mark.slow
WRITES = {"POST", "PUT", "DELETE", "PATCH"}
#: examples per operation and generation mode; the whole file stays near a minute on a 2-core machine
EXAMPLES = 50


@pytest.fixture(scope="module")
def app(tmp_path_factory, bundle_dir):
    tmp = tmp_path_factory.mktemp("fuzz")
    images = bundle_dir.parent / (bundle_dir.name + "-images")
    # logins unthrottled here: the fuzzer sends hundreds (throttling has its own test)
    cfg = station_config(tmp, bundle_dir, images, max_frames=6,
                         api={"login_per_minute": 1e6, "logins_per_second": 1e6})
    st = Station(cfg).start()
    assert st.wait(60)
    yield create_app(st)
    st.stop()


def api_routes(routes):
    """Every APIRoute, also inside included routers (FastAPI keeps those as branches)."""
    for r in routes:
        if isinstance(r, APIRoute):
            yield r
        else:
            yield from api_routes(getattr(getattr(r, "original_router", r), "routes", []))


def needed_role(route: APIRoute) -> str | None:
    """The role a route's dependencies require (serving.api.deps.require), or None."""
    roles, todo = set(), [route.dependant]
    while todo:
        d = todo.pop()
        roles.add(getattr(d.call, "role", None))
        todo += d.dependencies
    return "engineer" if "engineer" in roles else "operator" if "operator" in roles else None


def operations(app):
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    return [r.ok() for r in schema.get_all_operations()]


def fuzz(op, mode, examples: int, call) -> int:
    """Run ``call(case)`` on up to ``examples`` cases of ``op`` (no shrinking: every finding is collected)."""
    seen = 0

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=op.as_strategy(generation_mode=mode))
    def run(case) -> None:
        nonlocal seen
        seen += 1
        call(case)

    try:
        run()
    except Unsatisfiable:  # e.g. no malformed request exists for an operation without parameters
        pass
    return seen


def token(app, user: str, role: str) -> dict:
    return {"Authorization": f"Bearer {app.state.sessions.issue(user, role)}"}


def test_no_request_gets_a_server_error(app):
    errors, sent, t0 = [], 0, time.monotonic()

    for op in operations(app):
        def call(case, op=op) -> None:
            # a fresh engineer session per request: logout and revocations are among the operations
            r = case.call(headers=token(app, "eddie", "engineer"))
            if r.status_code >= 500:
                errors.append(f"{op.method.upper()} {case.formatted_path} -> {r.status_code}: {r.text[:200]} "
                              f"(body {str(case.body)[:120]!r}, query {case.query})")

        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            sent += fuzz(op, mode, EXAMPLES, call)
    print(f"{sent} requests in {time.monotonic() - t0:.0f} s, {len(errors)} server errors")
    assert sent > 500
    assert errors == [], "\n".join(errors[:30])


def test_every_write_refuses_anonymous_and_wrongly_roled_requests(app):
    routes = {(m, r.path): r for r in api_routes(app.routes) for m in r.methods}
    engineer_only = {k for k, r in routes.items() if needed_role(r) == "engineer"}
    assert {("PUT", "/api/gate"), ("POST", "/api/bundle"), ("POST", "/api/device-keys"), ("GET", "/api/audit"),
            ("POST", "/api/sessions/{user}/revoke")} <= engineer_only
    wrong, checked = [], set()

    for op in operations(app):
        key = (op.method.upper(), op.path)
        if key[0] not in WRITES or key in PUBLIC:
            continue

        def call(case, key=key) -> None:
            anonymous = case.call(headers={"Authorization": ""})
            if anonymous.status_code != 401:
                wrong.append(f"{key} anonymous -> {anonymous.status_code}")
            if key in engineer_only:
                operator = case.call(headers=token(app, "olga", "operator"))
                if operator.status_code != 403:
                    wrong.append(f"{key} operator -> {operator.status_code}")
            checked.add(key)

        fuzz(op, schemathesis.GenerationMode.POSITIVE, 5, call)
    writes = {k for k in routes if k[0] in WRITES and k not in PUBLIC}
    assert checked == writes and len(writes) >= 15
    assert wrong == [], "\n".join(sorted(set(wrong)))
