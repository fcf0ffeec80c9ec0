"""``lineguard keys create``, ``lineguard deploy``, ``lineguard rollback`` and ``lineguard fleet status``."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from flows.cli.common import add_params_args, load


def register(sub) -> None:
    """Add these commands to the ``lineguard`` parser."""
    k = sub.add_parser("keys", help="the pipeline's bundle signing key")
    ks = k.add_subparsers(dest="keys_command", required=True, metavar="action")
    kc = ks.add_parser("create", help="create an Ed25519 key pair: STEM.key (private, 0600) and STEM.pub (stations)")
    kc.add_argument("--out", default=None, help="key stem (default: export.signing_key without .key)")
    kc.add_argument("--overwrite", action="store_true", help="replace an existing key (stations must get the new .pub)")
    add_params_args(kc)
    kc.set_defaults(func=cmd_keys_create)

    def station_args(p, many: bool = True) -> None:
        p.add_argument("--station", action="append", required=many, default=[], metavar="URL",
                       help="a station's API, e.g. http://10.0.0.7:8000 (repeatable)")
        p.add_argument("--user", help="engineer login on the stations (or LINEGUARD_STATION_USER)")
        p.add_argument("--password-env", default="LINEGUARD_STATION_PASSWORD",
                       help="environment variable holding the password (else it is asked for)")
        p.add_argument("--ca-cert", help="CA certificate of stations served over TLS")
        p.add_argument("--json", action="store_true", help="print the result as JSON")
        add_params_args(p)

    d = sub.add_parser("deploy", help="upload a registered bundle to stations; each verifies, smoke-tests, switches")
    d.add_argument("--model", required=True, help="NAME@ALIAS or NAME/VERSION, e.g. lineguard-elpv-mono@candidate")
    station_args(d)
    d.set_defaults(func=cmd_deploy)
    r = sub.add_parser("rollback", help="return stations to the bundle version they ran before")
    r.add_argument("--kind", choices=["anomaly", "detector"], default="anomaly")
    station_args(r)
    r.set_defaults(func=cmd_rollback)
    f = sub.add_parser("fleet", help="what runs where")
    fs = f.add_subparsers(dest="fleet_command", required=True, metavar="action")
    s = fs.add_parser("status", help="every station in the registry: version, stability index, last sync (only the "
                                     "--station URLs you give are asked, with your login)")
    s.add_argument("--model", help="only this registered model")
    station_args(s, many=False)
    s.set_defaults(func=cmd_fleet_status)


def cmd_keys_create(args: argparse.Namespace) -> int:
    """Create the signing key pair."""
    from pathlib import Path

    from flows.fleet.keys import key_path
    from serving.engine.signing import create_keypair, key_id, load_public_key
    from serving.errors import ConfigError

    if args.out:
        stem = Path(args.out)
    else:
        path = key_path(load(args).export.signing_key)
        if path is None:
            raise ConfigError("export.signing_key is null: pass --out STEM")
        stem = path.with_suffix("")
    private, public = create_keypair(stem, overwrite=args.overwrite)
    print(f"signing key {private} (keep it private), public key {public} (key id "
          f"{key_id(load_public_key(public))}): list it under bundles.trusted_keys in every station config")
    return 0


def _warn_cleartext(urls: list[str]) -> None:
    """The engineer's password crosses the network in clear to an http:// station that is not this machine."""
    import sys
    from urllib.parse import urlparse

    for u in urls:
        p = urlparse(u)
        if p.scheme == "http" and p.hostname not in ("127.0.0.1", "localhost", "::1"):
            print(f"warning: {u} is plain http: the engineer password travels in clear; serve the station with TLS "
                  "(api.tls_cert / api.tls_key) and use https://", file=sys.stderr)


def _print(outcomes, as_json: bool) -> int:
    if as_json:
        print(json.dumps([asdict(o) for o in outcomes]))
    return 0 if all(o.ok for o in outcomes) else 1


def cmd_deploy(args: argparse.Namespace) -> int:
    """Deploy a model version; exit 1 if any station refused it."""
    from flows.fleet.deploy import credentials, deploy

    quiet = (lambda *_: None) if args.json else print
    _warn_cleartext(args.station)
    return _print(deploy(args.model, args.station, credentials(args.user, args.password_env, args.ca_cert),
                         load(args), progress=quiet), args.json)


def cmd_rollback(args: argparse.Namespace) -> int:
    """Roll stations back; exit 1 if any could not."""
    from flows.fleet.deploy import credentials, rollback

    quiet = (lambda *_: None) if args.json else print
    _warn_cleartext(args.station)
    return _print(rollback(args.station, credentials(args.user, args.password_env, args.ca_cert), load(args),
                           args.kind, progress=quiet), args.json)


def cmd_fleet_status(args: argparse.Namespace) -> int:
    """Print the fleet table."""
    from flows.fleet.deploy import credentials, fleet_status

    _warn_cleartext(args.station)
    rows = fleet_status(credentials(args.user, args.password_env, args.ca_cert), load(args), args.station, args.model)
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"{'station':<16} {'model':<26} {'runs':<40} {'registry':>8} {'since':<25} {'SI':>4} {'last sync':<25}")
    for r in rows:
        runs = r.get("running") or f"UNREACHABLE: {r.get('error', '')[:60]}"
        mark = "" if r.get("matches_registry") in (True, None) else " (!)"
        si = r.get("stability_index")
        print(f"{r['station_id']:<16} {r['model']:<26} {runs + mark:<40} {r['registry_version']:>8} {r['since']:<25} "
              f"{'-' if si is None else round(si):>4} {r.get('last_sync') or '-':<25}")
    return 0
