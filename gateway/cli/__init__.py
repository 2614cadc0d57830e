"""The ``gateway`` command: serve | worker | reload | migrate | check-config | users | keys
| usage | credits | demo.

One module per noun (:mod:`~gateway.cli.server`, :mod:`~gateway.cli.users`,
:mod:`~gateway.cli.keys`, :mod:`~gateway.cli.usage`, :mod:`~gateway.cli.credits`); each
adds its subcommands, whose
parsers name their handler. Operators' changes share their code with the admin API
(:mod:`gateway.accounts.operators`): audited (actor ``cli``) and pushed to every
running gateway.
"""

from __future__ import annotations

import argparse
import logging
import sys

import asyncpg
from redis.exceptions import RedisError

from gateway import errors
from gateway.cli import credits, keys, server, usage, users
from gateway.cli.common import CliError, Command
from gateway.config import ConfigError, default_config_path, load_config

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        help="path to config.yaml (default: $GATEWAY_CONFIG or ./config.yaml)",
    )
    parser = argparse.ArgumentParser(
        prog="gateway", description=(__doc__ or "").split("\n\n")[0], parents=[common]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for noun in (server, users, keys, usage, credits):
        noun.add_parsers(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(getattr(args, "config", None) or default_config_path())
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    handler: Command = args.handler
    # Operators' changes are in the audit log; a command does not echo the log line
    # (serve's handlers, on the root logger, still receive it).
    logging.getLogger("gateway.admin").addHandler(logging.NullHandler())
    try:
        return handler(config, args)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except errors.InvalidRequest as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except errors.GatewayError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except (OSError, asyncpg.PostgresError, RedisError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before serve has its own handlers: no traceback
        return 130
