"""Sessions expire and can be revoked; passwords, tokens and keys never reach the logs; the API listens on
127.0.0.1 unless told otherwise, speaks TLS when configured; demo passwords only on a station marked demo."""

import datetime
import json
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from fastapi.testclient import TestClient

from api_station import running_station, write_config
from helpers import ROOT
from serving.api import create_app
from serving.api.auth import demo_password_users, hash_password
from serving.config import ApiConfig, load_config
from serving.errors import ConfigError
from serving.station.runtime import Station


@pytest.fixture()
def station(make_config):
    st = Station(make_config(max_frames=2, api={"session_hours": 0.0005})).start()  # 1.8 s sessions
    assert st.wait(30)
    yield st
    st.stop()


def login(client, user, pw) -> dict:
    r = client.post("/api/login", json={"username": user, "password": pw})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def test_tokens_expire_and_logout_ends_one_at_once(station):
    client = TestClient(create_app(station))
    h = login(client, "olga", "op-pass")
    assert client.get("/api/state", headers=h).status_code == 200
    time.sleep(2.0)
    assert client.get("/api/state", headers=h).status_code == 401  # expired
    h, other = login(client, "olga", "op-pass"), login(client, "olga", "op-pass")
    assert client.post("/api/logout", headers=h).json() == {"ok": True}
    assert client.get("/api/state", headers=h).status_code == 401
    assert client.get("/api/state", headers=other).status_code == 200  # her other session goes on


def test_an_engineer_revokes_every_session_of_a_user_and_it_is_audited(station):
    client = TestClient(create_app(station))
    tablets = [login(client, "olga", "op-pass") for _ in range(2)]
    eng = login(client, "eddie", "eng-pass")
    assert client.post("/api/sessions/eddie/revoke", headers=tablets[0]).status_code == 403
    listing = client.get("/api/sessions", headers=eng).json()
    assert {"user": "olga", "role": "operator", "sessions": 2} == {k: v for k, v in listing[1].items() if k != "expires"}
    assert "token" not in json.dumps(listing)
    assert client.post("/api/sessions/olga/revoke", headers=eng).json() == {"user": "olga", "revoked": 2}
    assert all(client.get("/api/state", headers=t).status_code == 401 for t in tablets)
    assert client.get("/api/state", headers=eng).status_code == 200
    entry = station.audit.entries()[-1]
    assert (entry["action"], entry["user"], entry["details"]) == ("sessions_revoked", "eddie", {"of": "olga",
                                                                                                 "sessions": 2})


def test_passwords_tokens_and_keys_never_reach_the_logs_and_the_api_listens_on_loopback(tmp_path, make_config):
    assert ApiConfig().host == "127.0.0.1"
    password, wrong = "Corr3ct-Horse-Battery", "Wr0ng-Staple-Guess"
    users = {"olga": {"role": "operator", "password_hash": hash_password(password, 1000)},
             "eddie": {"role": "engineer", "password_hash": hash_password(password, 1000)}}
    cfg = make_config(max_frames=2, api={"users": users})
    assert cfg.api.host == "127.0.0.1"
    secrets = [password, wrong]
    with running_station(tmp_path, cfg) as st:
        def post(path, body, headers=None):
            req = urllib.request.Request(st.url + path, json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json", **(headers or {})})
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    return r.status, json.load(r)
            except urllib.error.HTTPError as e:
                return e.code, json.load(e)

        code, body = post("/api/login", {"username": "eddie", "password": password})
        assert code == 200
        secrets.append(body["token"])
        auth = {"Authorization": f"Bearer {body['token']}"}
        assert post("/api/login", {"username": "olga", "password": wrong})[0] == 401
        assert post("/api/login", {"username": password, "password": password})[0] == 401  # password typed as name
        code, body = post("/api/login", {"username": "olga", "password": password, "extra": password})
        assert code == 422 and password not in json.dumps(body)
        code, body = post("/api/device-keys", {"name": "press-7"}, auth)
        assert code == 200
        secrets.append(body["key"])
        assert post("/api/trigger", {}, {"X-Device-Key": body["key"]})[0] == 409  # a replay: no HTTP trigger
        listening = [line.split() for table in ("/proc/net/tcp", "/proc/net/tcp6")
                     for line in open(table).read().splitlines()[1:]]
        mine = [f[1] for f in listening if f[3] == "0A" and f[1].endswith(f":{st.port:04X}")]
    assert mine == [f"0100007F:{st.port:04X}"]  # 127.0.0.1 only, nothing on 0.0.0.0 or ::
    secrets += [(tmp_path / "evidence.key").read_text().strip(), (tmp_path / "audit.key").read_text().strip()]
    logged = st.log.read_text()
    assert "failed login" in logged and "login: 'eddie'" in logged  # logins are logged ...
    for name in ("station log", "audit log"):
        text = logged if name == "station log" else (tmp_path / "audit.jsonl").read_text()
        leaked = [s[:6] + "..." for s in secrets if s in text]
        assert leaked == [], f"{name} holds secrets: {leaked}"  # ... without a password, token or key


def self_signed(tmp_path):
    """A certificate for 127.0.0.1 and its key, made with `cryptography` as an engineer would with openssl."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lineguard-test-station")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "station.crt", tmp_path / "station.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    return cert_file, key_file


def test_tls_from_the_config(tmp_path, make_config):
    cert, key = self_signed(tmp_path)
    with pytest.raises(ConfigError, match="api.tls_key: TLS needs both tls_cert and tls_key"):
        make_config(api={"tls_cert": str(cert)})
    cfg = make_config(max_frames=2, api={"tls_cert": str(cert), "tls_key": str(key)})
    with running_station(tmp_path, cfg, cafile=cert) as st:
        assert st.url.startswith("https://")
        req = urllib.request.Request(st.url + "/api/login", json.dumps({"username": "olga", "password": "op-pass"}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=30, context=ssl.create_default_context(cafile=str(cert))) as r:
            assert r.status == 200 and json.load(r)["role"] == "operator"
        with pytest.raises(OSError):  # plain HTTP is not served on that port
            urllib.request.urlopen(f"http://127.0.0.1:{st.port}/healthz", timeout=5).read()
    assert "operator page: https://127.0.0.1:" in st.log.read_text()
    # a key that does not belong to the certificate: named at start, one line, exit 2
    (tmp_path / "other").mkdir()
    _, other = self_signed(tmp_path / "other")
    bad = make_config(max_frames=2, api={"tls_cert": str(cert), "tls_key": str(other)})
    out = subprocess.run([sys.executable, "-m", "serving.cli", "run", "--config", str(write_config(tmp_path, bad))],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "cannot be used together" in out.stderr and "Traceback" not in out.stderr


DEMO_USERS = {"operator": {"role": "operator", "password_hash": hash_password("operator", 1000)},
              "engineer": {"role": "engineer", "password_hash": hash_password("engineer", 1000)},
              "olga": {"role": "operator", "password_hash": hash_password("op-pass", 1000)}}


def test_demo_passwords_only_on_a_station_marked_demo(tmp_path, make_config):
    shipped = load_config(ROOT / "station.example.yaml")
    assert demo_password_users(shipped.api.users) == ["engineer", "operator"] and not shipped.api.demo
    assert "--demo" in (ROOT / "scripts" / "station-demo.sh").read_text()
    cfg = make_config(max_frames=2, api={"users": DEMO_USERS})
    path = write_config(tmp_path, cfg)
    st = Station(make_config(max_frames=2, api={"users": DEMO_USERS})).start()
    assert st.wait(30)
    try:
        with pytest.raises(ConfigError, match="api.users: engineer, operator still have a demo password"):
            create_app(st)
        st.cfg.api.demo = True
        client = TestClient(create_app(st))
        assert client.get("/api/state", headers=login(client, "operator", "operator")).json()["demo"] is True
    finally:
        st.stop()
    out = subprocess.run([sys.executable, "-m", "serving.cli", "run", "--config", str(path), "--api-port", "1"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "still have a demo password" in out.stderr and "api.demo: true" in out.stderr
    with running_station(tmp_path, cfg, "--demo") as st:
        assert "(DEMO: demo passwords allowed)" in st.log.read_text()


def test_a_station_with_real_passwords_says_it_is_no_demo(station):
    client = TestClient(create_app(station))
    assert client.get("/api/state", headers=login(client, "olga", "op-pass")).json()["demo"] is False


def test_an_unreadable_device_key_file_is_named_not_a_traceback(station):
    path = station.cfg.api.device_keys
    with open(path, "w") as fh:
        fh.write("{not json")
    with pytest.raises(ConfigError, match="api.device_keys .*device-keys.json: cannot be read"):
        create_app(station)
