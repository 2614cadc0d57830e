"""``gateway serve | worker | reload | migrate | check-config | demo``."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from gateway.cli.common import CliError, run
from gateway.config import Config, default_config_path
from gateway.credits.pricing import price_table

__all__ = ["DEMO_EMAIL", "add_parsers"]

DEMO_EMAIL = "demo@example.com"


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    serve = sub.add_parser("serve", parents=[common], help="run the gateway")
    serve.add_argument("--host", help="override server.host")
    serve.add_argument("--port", type=int, help="override server.port")
    serve.add_argument(
        "--dev", action="store_true", help="development mode: verbose logs, generated secrets"
    )
    serve.set_defaults(handler=_serve)

    worker = sub.add_parser(
        "worker",
        parents=[common],
        help="work image jobs only (no public API; /healthz, /readyz and /metrics)",
    )
    worker.add_argument("--host", help="override server.host")
    worker.add_argument("--port", type=int, help="override server.port")
    worker.add_argument("--dev", action="store_true", help="development mode")
    worker.set_defaults(handler=_serve)

    reload = sub.add_parser(
        "reload",
        parents=[common],
        help="check the config as serve does, then have the running gateway read it again",
    )
    reload.add_argument(
        "--pid", type=int, help="the gateway's process id (default: from its pid file)"
    )
    reload.add_argument(
        "--port", type=int, help="the port the running gateway serves (default: server.port)"
    )
    reload.add_argument("--dev", action="store_true", help="check as `serve --dev` would")
    reload.set_defaults(handler=_reload)

    migrate = sub.add_parser("migrate", parents=[common], help="apply database migrations")
    migrate.add_argument(
        "--rollback",
        type=int,
        metavar="N",
        nargs="?",
        const=1,
        default=None,
        help="roll back the N most recent migrations (default 1) instead",
    )
    migrate.set_defaults(handler=_migrate)

    check = sub.add_parser(
        "check-config",
        parents=[common],
        help="run serve's start-up checks (config, backends, environment) and exit",
    )
    check.add_argument(
        "--dev", action="store_true", help="check as `serve --dev` would (no JWT secret needed)"
    )
    check.set_defaults(handler=_check_config)

    demo = sub.add_parser("demo", parents=[common], help="ensure a demo user and print a new key")
    demo.set_defaults(handler=_demo)


def _check_config(config: Config, args: argparse.Namespace) -> int:
    from gateway.startup import prepare

    prepared = prepare(config, dev=args.dev)  # exactly what `serve` runs before it starts
    for warning in prepared.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    note = " (development mode: a JWT secret is generated)" if prepared.generated_jwt_secret else ""
    print(
        f"config ok: {len(config.plans)} plans, {len(config.backends)} backends, "
        f"{len(config.models)} models{note}"
    )
    print("prices (credits per image):")
    for line in price_table(config.pricing, list(config.models)):
        print(line)
    print("plans (monthly credits):")
    for name, plan in config.plans.items():
        credits = "no credit limit" if plan.monthly_credits is None else plan.monthly_credits
        print(f"  {name}: {credits}")
    return 0


def _migrate(config: Config, args: argparse.Namespace) -> int:
    from gateway import migrate

    if args.rollback is not None:
        done = migrate.rollback(config.database.url, steps=args.rollback)
        print(f"rolled back: {', '.join(done) or 'nothing'}")
    else:
        done = migrate.apply(config.database.url)
        print(f"applied: {', '.join(done) or 'nothing (up to date)'}")
    return 0


def _serve(config: Config, args: argparse.Namespace) -> int:
    from gateway.logs import configure_logging
    from gateway.server import serve
    from gateway.startup import DEV_MODE_WARNING, prepare

    configure_logging(config.logging, force_text=args.dev)
    # What check-config runs; here before any worker starts, so that a generated JWT
    # secret is one for every worker (a token from one is good at all of them).
    prepared = prepare(config, dev=args.dev)
    if prepared.generated_jwt_secret:
        logging.getLogger("gateway").warning(DEV_MODE_WARNING)
    for warning in prepared.warnings:
        logging.getLogger("gateway").warning(warning)
    host = args.host or config.server.host
    port = args.port or config.server.port
    public_api = args.command == "serve"
    path = Path(getattr(args, "config", None) or default_config_path()).resolve()
    return serve(prepared.config, host, port, dev=args.dev, public_api=public_api, config_path=path)


def _reload(config: Config, args: argparse.Namespace) -> int:
    from gateway.server import pid_file
    from gateway.startup import prepare

    prepare(config, dev=args.dev)  # a file serve would refuse is refused here, unsent
    pid = args.pid
    if pid is None:
        path = pid_file(args.port or config.server.port)
        try:
            pid = int(path.read_text().strip())
        except (OSError, ValueError):
            raise CliError(f"no running gateway found ({path}); give its --pid") from None
    cmdline: bytes | None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        cmdline = None if Path("/proc/self").exists() else b"gateway"  # no /proc: trust it
    except OSError:
        cmdline = b"gateway"
    if cmdline is None or b"gateway" not in cmdline:
        raise CliError(f"process {pid} is not a running gateway")
    os.kill(pid, signal.SIGHUP)
    print(f"config ok; gateway {pid} reloads it (its log says what changed)")
    return 0


def _demo(config: Config, args: argparse.Namespace) -> int:
    from gateway.db.users import create_user, find_user_by_email
    from gateway.keys.issue import issue_key

    async def work(conn: Any) -> int:
        user = await find_user_by_email(conn, DEMO_EMAIL)
        if user is None:
            user = await create_user(conn, DEMO_EMAIL, config.default_plan)
        key, _ = await issue_key(conn, user_id=user["id"], prefix=config.keys.prefix, name="demo")
        port = config.server.port
        print(f"\nDemo user {DEMO_EMAIL} (plan {user['plan']}). A new API key, shown once:\n")
        print(f"  {key}\n")
        print("Try it:\n")
        print(
            f"  curl -s http://127.0.0.1:{port}/v1/images/generations \\\n"
            f"    -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\\n"
            '    -d \'{"prompt": "a lighthouse at dawn", "size": "256x256"}\' \\\n'
            "    | python3 -c 'import sys,json,base64; "
            'sys.stdout.buffer.write(base64.b64decode(json.load(sys.stdin)["data"][0]["b64_json"]))\''
            " > image.png\n",
            flush=True,
        )
        return 0

    return run(config, work)
