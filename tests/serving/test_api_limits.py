"""What one unauthenticated client can cost the station: request bodies are capped while they stream (413),
logins are throttled before any password is hashed (429), and a login flood does not make inspection miss
its deadline. Real station processes on 127.0.0.1; memory read from /proc."""

import http.client
import json
import os
import re
import socket
import threading
import time
import urllib.request

import pytest
from fastapi.testclient import TestClient

from api_station import running_station
from serving.api import create_app
from serving.api.auth import hash_password
from serving.station.runtime import Station

pytestmark = [pytest.mark.services, pytest.mark.slow]
MB = 1 << 20


def send_body(port: int, path: str, size: int, chunked: bool = False) -> int | None:
    """POST ``size`` bytes to ``path`` as fast as the station takes them; the status it answered, or None if it
    closed the connection without an answer."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    head += "Transfer-Encoding: chunked\r\n\r\n" if chunked else f"Content-Length: {size}\r\n\r\n"
    chunk = b'{"username": "' + b"a" * (MB - 20)
    try:
        sock.sendall(head.encode())
        sent = 0
        while sent < size:
            piece = chunk[: min(len(chunk), size - sent)]
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            sent += len(piece)
        if chunked:
            sock.sendall(b"0\r\n\r\n")
    except OSError:
        pass  # the station answered and closed while we were still sending: read what it said
    try:
        answer = sock.recv(4096).decode("latin-1")
    except OSError:
        return None
    finally:
        sock.close()
    m = re.match(r"HTTP/1\.1 (\d+)", answer)
    return int(m.group(1)) if m else None


def test_a_150_mb_body_is_refused_with_413_without_the_station_growing(tmp_path, make_config):
    cfg = make_config(max_frames=4)
    with running_station(tmp_path, cfg) as st:
        time.sleep(2)  # let the replay finish: nothing else allocates while we measure
        before = st.status()
        answers = [send_body(st.port, "/api/login", 150 * MB),
                   send_body(st.port, "/api/login", 150 * MB, chunked=True),
                   send_body(st.port, "/api/review/1", 150 * MB),
                   send_body(st.port, "/api/review/1", 150 * MB, chunked=True)]
        after = st.status()
        with urllib.request.urlopen(f"{st.url}/healthz", timeout=5) as r:
            assert r.status == 200
    grew_mb = (after["VmHWM"] - before["VmHWM"]) / 1024
    print(f"station RSS {before['VmRSS'] / 1024:.0f} -> {after['VmRSS'] / 1024:.0f} MB, peak "
          f"{before['VmHWM'] / 1024:.0f} -> {after['VmHWM'] / 1024:.0f} MB; answers {answers}")
    assert answers == [413, 413, 413, 413]
    assert grew_mb < 8, f"the station's peak memory grew by {grew_mb:.0f} MB"


@pytest.fixture()
def client(make_config):
    st = Station(make_config(max_frames=2))
    st.start()
    assert st.wait(30)
    yield TestClient(create_app(st))
    st.stop()


class Counted:
    """The app's real password checker, with its calls counted."""

    def __init__(self, real) -> None:
        self.real, self.calls = real, 0

    def check(self, password, stored):
        self.calls += 1
        return self.real.check(password, stored)


def test_logins_from_one_address_are_throttled_before_any_password_is_hashed(client):
    checker = client.app.state.password_checker = Counted(client.app.state.password_checker)
    codes = [client.post("/api/login", json={"username": f"user{i}", "password": f"guess{i}"}).status_code
             for i in range(12)]
    assert codes == [401] * 10 + [429] * 2  # api.login_per_minute: 10, also as a burst
    assert checker.calls == 10  # the refused attempts never reached the password hash
    r = client.post("/api/login", json={"username": "eddie", "password": "eng-pass"})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1 and "try again in" in r.json()["detail"]
    # from many addresses: api.logins_per_second (2) for all together, 10 at once
    codes = [TestClient(client.app, client=(f"10.0.0.{i}", 40000)).post(
        "/api/login", json={"username": "olga", "password": f"guess{i}"}).status_code for i in range(12)]
    assert codes.count(429) >= 1 and checker.calls <= 10 + 10 + 2


def test_blocking_requests_share_a_few_threads(client):
    import anyio.to_thread

    with TestClient(client.app) as running:  # the app's lifespan, as uvicorn runs it
        assert running.portal.call(lambda: anyio.to_thread.current_default_thread_limiter().total_tokens) == 8


def test_repeated_failed_logins_of_one_user_are_slowed_down(make_config):
    st = Station(make_config(max_frames=2, api={"login_per_minute": 1000, "logins_per_second": 1000}))
    st.start()
    assert st.wait(30)
    try:
        client = TestClient(create_app(st))
        for _ in range(4):  # three are free; the fourth failure in a row makes the next try wait 2 s
            assert client.post("/api/login", json={"username": "olga", "password": "wrong"}).status_code == 401
        t = time.monotonic()
        r = client.post("/api/login", json={"username": "olga", "password": "op-pass"})  # right, but too soon
        assert r.status_code == 429 and "failed logins for this user" in r.json()["detail"]
        assert time.monotonic() - t >= 0.9 and r.headers["Retry-After"] == "1"  # 1 s held back, 1 s more to wait
        assert client.post("/api/login", json={"username": "eddie", "password": "eng-pass"}).status_code == 200
        time.sleep(1.1)
        assert client.post("/api/login", json={"username": "olga", "password": "op-pass"}).status_code == 200
        assert client.post("/api/login", json={"username": "olga", "password": "wrong"}).status_code == 401  # reset
    finally:
        st.stop()


def metric(text: str, name: str, **labels) -> float:
    """Sum of a Prometheus counter's samples whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used, from /proc."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))] if values else 0.0


def test_a_login_flood_during_a_replay_makes_no_part_miss_its_deadline(tmp_path, make_config):
    """Real PBKDF2 cost (200,000 iterations); 16 clients post logins as fast as the station answers, on and off in
    3-second bursts, while it inspects 8 parts a second under station.example.yaml's deadline (250 ms). No part
    fails safe on its deadline, and parts inspected during the flood take about as long as those between."""
    users = {"olga": {"role": "operator", "password_hash": hash_password("op-pass")},
             "eddie": {"role": "engineer", "password_hash": hash_password("eng-pass")}}
    rate, parts = 8, 8 * 24
    cfg = make_config(max_frames=parts, source={"rate_hz": rate, "loop": True}, evidence={"pass_sample_rate": 0.0},
                      gate={"deadline_ms": 250}, actuator={"delay_ms": 300}, api={"users": users})
    statuses: dict[int, int] = {}
    windows: list[tuple[float, float]] = []  # when the flood ran (wall clock)
    with running_station(tmp_path, cfg) as st:
        stop, flooding = threading.Event(), threading.Event()

        def flood() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", st.port, timeout=30)
            body = json.dumps({"username": "olga", "password": "not-her-password"})
            while not stop.is_set():
                if not flooding.wait(0.05):
                    continue
                try:
                    conn.request("POST", "/api/login", body, {"Content-Type": "application/json"})
                    r = conn.getresponse()
                    r.read()
                    statuses[r.status] = statuses.get(r.status, 0) + 1
                    if r.getheader("connection") == "close":
                        conn.close()
                except OSError:
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", st.port, timeout=30)

        threads = [threading.Thread(target=flood, daemon=True) for _ in range(16)]
        for t in threads:
            t.start()
        t0 = mark = time.monotonic()
        cpu0 = cpu_seconds(st.proc.pid)
        spent = {"flood": [0.0, 0.0], "calm": [0.0, 0.0]}  # station CPU seconds, wall seconds
        while time.monotonic() < t0 + parts / rate + 60:
            with urllib.request.urlopen(f"{st.url}/healthz", timeout=30) as r:
                if json.load(r)["finished"]:
                    break
            wanted = int((time.monotonic() - t0) / 3) % 2 == 1  # 3 s calm, 3 s flood, ...
            if wanted != flooding.is_set():
                now, cpu = time.monotonic(), cpu_seconds(st.proc.pid)
                phase = spent["flood" if flooding.is_set() else "calm"]
                phase[0], phase[1] = phase[0] + cpu - cpu0, phase[1] + now - mark
                mark, cpu0 = now, cpu
                if wanted:
                    flooding.set()
                    windows.append((time.time(), float("inf")))
                else:
                    flooding.clear()
                    windows[-1] = (windows[-1][0], time.time())
            time.sleep(0.1)
        flooding.clear()
        stop.set()
        for t in threads:
            t.join(35)
        with urllib.request.urlopen(f"{st.url}/metrics", timeout=30) as r:
            text = r.read().decode()
    from serving.alarms import Alarms
    from serving.evidence import EvidenceStore

    ev = EvidenceStore(cfg.evidence, Alarms(), cfg.station_id)
    records = ev.query(limit=10_000)
    ev.close()
    # a part counts as flooded when the flood was running for its whole inspection (the record's time is its end)
    during = [r for r in records if any(a + 0.3 <= r.wall_time <= b for a, b in windows)]
    calm = [r for r in records if not any(a <= r.wall_time <= b + 0.3 for a, b in windows)]
    lat = {name: [r.latency_ms.get("total", 0.0) for r in rs] for name, rs in (("flood", during), ("calm", calm))}
    missed = {name: sum(r.rule == "fail_safe.deadline_missed" for r in rs) for name, rs in (("flood", during),
                                                                                         ("calm", calm))}
    for name in lat:
        print(f"{name}: {len(lat[name])} parts, latency p50 {percentile(lat[name], 0.5):.0f} ms, "
              f"p95 {percentile(lat[name], 0.95):.0f} ms, max {max(lat[name], default=0):.0f} ms, "
              f"{missed[name]} past the deadline")
    load = {name: cpu / wall for name, (cpu, wall) in spent.items()}
    print(f"flood answers {statuses}; station CPU {load['calm']:.2f} cores between floods, {load['flood']:.2f} "
          "during")
    assert metric(text, "lineguard_verdicts_total") == parts and len(during) > 40 and len(calm) > 40
    assert sum(statuses.values()) > 100  # the flood really ran (most of it answered 429 before any hash)
    # what the flood costs the station in CPU (measured: 0.06 of a core; 0.42 when every attempt was hashed)
    assert load["flood"] - load["calm"] < 0.15
    assert metric(text, "lineguard_verdicts_total", rule="fail_safe.deadline_missed") == 0
