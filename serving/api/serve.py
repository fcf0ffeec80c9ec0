"""Serving the station's HTTP API beside the inspection: TLS checks, then uvicorn on a background thread.

>>> server = serve_api(station, "127.0.0.1", 8080)   # doctest: +SKIP
>>> server.should_exit = True                         # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time


def check_tls(api) -> None:
    """The TLS certificate and key of ``api`` (an ``ApiConfig``) load together, or a ConfigError names the file;
    a non-loopback address without TLS is warned about (passwords and tokens would cross the network in clear)."""
    import ipaddress
    import os
    import ssl

    from serving.errors import ConfigError

    log = logging.getLogger("lineguard.api")
    if api.tls_cert is None:
        try:
            loopback = ipaddress.ip_address(api.host).is_loopback
        except ValueError:
            loopback = api.host == "localhost"
        if not loopback:
            log.warning("api.host %s is reachable from the network without TLS: set api.tls_cert and api.tls_key "
                        "(SECURITY.md)", api.host)
        return
    for name in ("tls_cert", "tls_key"):
        path = getattr(api, name)
        if not os.path.isfile(path):
            raise ConfigError(f"api.{name} {path}: not found; point it at a PEM file (SECURITY.md, 'TLS')")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(api.tls_cert, api.tls_key)
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(f"api.tls_cert {api.tls_cert} / api.tls_key {api.tls_key}: cannot be used together "
                          f"({exc}); give the PEM certificate and its own private key") from None
    if os.stat(api.tls_key).st_mode & 0o077:
        log.warning("api.tls_key %s is readable by other users: chmod 600 it", api.tls_key)


def serve_api(station, host: str, port: int, *, wait: bool = True, timeout: float = 30.0):
    """Serve ``station``'s HTTP API (operator page, review, bundle...) from a background thread; return the uvicorn
    server (set ``should_exit`` to stop it). With ``wait``, return once it accepts connections.

    HTTPS when ``api.tls_cert``/``api.tls_key`` are set; connections capped at ``api.max_connections`` (503 past
    it); the API's threads run at a lower CPU priority than inspection (Linux)."""
    import threading

    import uvicorn

    from serving.api import create_app
    from serving.api.auth import lower_priority

    api = station.cfg.api
    check_tls(api)
    server = uvicorn.Server(uvicorn.Config(create_app(station), host=host, port=port, log_level="warning",
                                           ssl_certfile=api.tls_cert, ssl_keyfile=api.tls_key,
                                           limit_concurrency=api.max_connections, server_header=False))

    def run() -> None:
        lower_priority(5)  # inherited by the request threads it starts: a flood of requests yields to inspection
        server.run()

    thread = threading.Thread(target=run, name="api", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while wait and not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise TimeoutError(f"the station API did not start on {host}:{port} within {timeout:.0f} s (port in use?)")
        time.sleep(0.05)
    return server
