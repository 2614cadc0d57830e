"""The demo secrets this repository ships (``INSECURE-...``, docker-compose.yml's
defaults): outside ``--dev`` such an ``admin.token`` stops the gateway from starting, and
any other such secret is named in a warning at start-up."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.config import merge, write_config
from tests.support.processes import clean_env, gateway_command, running_gateway

#: docker-compose.yml's demo values (what an operator who copied it would run with).
DEMO_JWT_SECRET = "INSECURE-demo-jwt-secret-for-docker-compose-only-change-me"
DEMO_ADMIN_TOKEN = "INSECURE-demo-admin-token-for-docker-compose-only"


async def gateway(*args: str, cwd: Path) -> tuple[int, str, str]:
    environ = clean_env()
    environ.pop("GATEWAY_JWT_SECRET", None)
    environ.pop("GATEWAY_ADMIN_TOKEN", None)
    process = await asyncio.create_subprocess_exec(
        *gateway_command(*args),
        cwd=cwd,
        env=environ,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_an_insecure_admin_token_is_refused_by_serve_and_check_config(
    tmp_path: Path, raw_config: dict[str, Any]
):
    path = write_config(
        tmp_path / "config.yaml", merge(raw_config, {"admin": {"token": DEMO_ADMIN_TOKEN}})
    )
    served, checked = await asyncio.gather(
        gateway("serve", "--config", str(path), "--port", "1", cwd=tmp_path),
        gateway("check-config", "--config", str(path), cwd=tmp_path),
    )
    for status, out, err in (served, checked):
        assert status == 2
        assert out == ""
        assert err.startswith(
            "config error: admin.token: is a documented insecure default (INSECURE-...)"
        )
        assert "set GATEWAY_ADMIN_TOKEN to a secret of your own" in err
        assert DEMO_ADMIN_TOKEN not in err  # the value itself is never printed


async def test_in_development_mode_the_demo_secrets_are_fine(
    tmp_path: Path, raw_config: dict[str, Any]
):
    raw = merge(raw_config, {"admin": {"token": DEMO_ADMIN_TOKEN}})
    raw["auth"]["jwt_secrets"] = [DEMO_JWT_SECRET]
    path = write_config(tmp_path / "config.yaml", raw)
    status, out, err = await gateway("check-config", "--dev", "--config", str(path), cwd=tmp_path)
    assert (status, err) == (0, "")
    assert out.startswith("config ok:")


async def test_an_insecure_jwt_secret_is_named_in_a_warning(
    tmp_path: Path, raw_config: dict[str, Any]
):
    raw = merge(raw_config, {"webhooks": {"secret_key": DEMO_JWT_SECRET}})
    raw["auth"]["jwt_secrets"] = [DEMO_JWT_SECRET]
    path = write_config(tmp_path / "config.yaml", raw)
    status, out, err = await gateway("check-config", "--config", str(path), cwd=tmp_path)
    assert status == 0
    assert out.startswith("config ok:")
    assert err.splitlines() == [
        f"warning: {key} is a documented insecure default (INSECURE-...): anyone can forge "
        "what it signs; set a secret of your own (openssl rand -base64 48)"
        for key in ("auth.jwt_secrets[0]", "webhooks.secret_key")
    ]

    # `serve` starts, and says so once in its log.
    async with (
        running_gateway(tmp_path, raw) as (url, _process),
        aiohttp.ClientSession() as session,
        session.get(f"{url}/healthz") as response,
    ):
        assert response.status == 200
        port = url.rsplit(":", 1)[1]
        log = (tmp_path / f"gateway-{port}.log").read_text()
    assert log.count("auth.jwt_secrets[0] is a documented insecure default") == 1
    assert DEMO_JWT_SECRET not in log
