"""``python -m bench.idle_postgres``: the Postgres transactions of one idle gateway process.

Starts ``gateway serve`` on a private database (migrated, dropped at the end) and a
private Redis prefix, lets it settle, and reads its database's ``xact_commit +
xact_rollback`` (``pg_stat_database``) before and after ``--window`` seconds with no
request at all: the background work (job sweeps, webhook polls, usage flushes). A
Postgres backend reports its counts within 10 s of going idle, hence the long window.

    python -m bench.idle_postgres [--window 30] [--settle 12]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from bench.gateway_setup import BenchDatabase, gateway_config, start_gateway
from bench.procs import Children, free_port, wait_http

__all__ = ["main"]


def _transactions(admin_url: str, database: str) -> int:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
            (database,),
        ).fetchone()
    return int(row[0]) if row else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.idle_postgres")
    parser.add_argument("--window", type=float, default=30.0, help="seconds measured (30)")
    parser.add_argument("--settle", type=float, default=12.0, help="seconds first (12)")
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/gateway")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="gw-idle-"))
    children = Children()
    db = BenchDatabase(os.environ.get("DATABASE_URL") or args.database_url)
    try:
        db.create()
        port = free_port()
        raw = gateway_config(
            port=port,
            database_url=db.url,
            redis_url=os.environ.get("REDIS_URL") or args.redis_url,
            redis_prefix=f"gwidle-{db.name}:",
            upstream_url="http://127.0.0.1:9/v1",  # never called: no request is made
            backend="http",
            workers=1,
            local_ttl=None,
        )
        gateway = start_gateway(children, "gateway", raw, workdir)
        wait_http(f"http://127.0.0.1:{port}/readyz", gateway)
        time.sleep(args.settle)
        before = _transactions(db.admin_url, db.name)
        time.sleep(args.window)
        after = _transactions(db.admin_url, db.name)
        # The two readings are made from the admin database: none of them is counted here.
        print(
            f"idle gateway: {after - before} transactions in {args.window:.0f} s"
            f" = {(after - before) / args.window:.2f} per second"
        )
        return 0
    finally:
        children.stop_all()
        db.drop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
