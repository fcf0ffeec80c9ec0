"""``lineguard flow``: the pipeline as a Prefect flow on any data set, once or on a schedule."""

from __future__ import annotations

import argparse
import json

from flows.cli.common import add_params_args, fresh_output, load, require_dataset


def cmd_flow_run(args: argparse.Namespace) -> int:
    """Run the enrollment flow (prepare? -> enroll -> export -> evaluate -> register) now, or schedule it."""
    params = load(args)
    data = args.data or params.data.dir
    if args.cron:
        from flows.orchestration.scheduler import add_schedule

        spec = add_schedule(args.name or f"enroll-{params.product}", "enroll", args.cron,
                            {"data_dir": data, "bundle_dir": args.out, "params": params.model_dump(mode="json")})
        print(f"scheduled {spec.name}: {spec.cron} ({spec.flow}); the scheduler serves it: lineguard scheduler status")
        return 0
    require_dataset(data)
    fresh_output(args.out, args.force)
    from flows.orchestration.pipeline import enroll_flow

    summary = enroll_flow(data, args.out, params)
    summary["metrics"].pop("verdicts", None)
    print(json.dumps(summary, indent=1, default=str))
    return 0


def register(sub) -> None:
    """Add these commands to the ``lineguard`` parser."""
    flow = sub.add_parser("flow", help="run the pipeline as a Prefect flow, now or on a schedule")
    fsub = flow.add_subparsers(dest="flow_command", required=True, metavar="action")
    s = fsub.add_parser("run", help="enroll, export, evaluate and register a bundle for any data set")
    s.add_argument("--data", help="MVTec-layout folder (default: data.dir of the parameters)")
    s.add_argument("--out", required=True, help="bundle folder to write")
    s.add_argument("--force", action="store_true", help="replace an existing bundle at --out")
    s.add_argument("--cron", help="instead of running now, schedule it, e.g. '0 3 * * 1' (needs the scheduler)")
    s.add_argument("--name", help="the scheduled deployment's name (default enroll-<product>)")
    add_params_args(s)
    s.set_defaults(func=cmd_flow_run)
    register_scheduler(sub)


def cmd_scheduler(args: argparse.Namespace) -> int:
    """Start, stop or inspect the scheduler (Prefect server + runner), or run a schedule now."""
    from flows.orchestration import scheduler

    if args.action == "start":
        info = scheduler.start(args.port)
        print(f"scheduler up: Prefect API {info['api_url']} (server pid {info['server_pid']}, runner pid "
              f"{info['runner_pid']}); {len(info['schedules'])} schedule(s); stop it with `lineguard scheduler stop`")
    elif args.action == "stop":
        print(json.dumps(scheduler.stop()))
    elif args.action == "status":
        print(json.dumps(scheduler.status(), indent=1))
    else:
        if not args.name:
            from serving.errors import ConfigError

            raise ConfigError("scheduler run needs the schedule's name, e.g. `lineguard scheduler run nightly-drift`")
        run = scheduler.run_now(args.name)
        print(f"{args.name}: {run.state.name} (flow run {run.id})")
        return 0 if run.state.is_completed() else 1
    return 0


def register_scheduler(sub) -> None:
    """``lineguard scheduler``."""
    s = sub.add_parser("scheduler", help="the Prefect server and runner that fire scheduled flows")
    s.add_argument("action", choices=["start", "stop", "status", "run"], help="what to do")
    s.add_argument("name", nargs="?", help="run: the schedule to run now")
    s.add_argument("--port", type=int, default=4200, help="start: the Prefect server's port on 127.0.0.1")
    s.set_defaults(func=cmd_scheduler)
