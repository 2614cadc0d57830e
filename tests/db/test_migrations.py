"""The schema the migrations create, read back from the catalog and tried out for real."""

from __future__ import annotations

import datetime as dt
import re
import uuid

import asyncpg
import pytest

from gateway import migrate
from gateway.keys.format import generate_key, hash_key
from tests.support.config import KEY_PREFIX
from tests.support.paths import ROOT

LONG_AGO = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)

TIMESTAMPTZ = "timestamp with time zone"

# column -> (data type, nullable, default or None); "now()" etc. as Postgres prints them.
EXPECTED_COLUMNS: dict[str, dict[str, tuple[str, bool, str | None]]] = {
    "users": {
        "id": ("uuid", False, "gen_random_uuid()"),
        "email": ("text", False, None),
        "password_hash": ("text", True, None),
        "plan": ("text", False, None),
        "is_active": ("boolean", False, "true"),
        "created_at": (TIMESTAMPTZ, False, "now()"),
        "updated_at": (TIMESTAMPTZ, False, "now()"),
    },
    "api_keys": {
        "id": ("uuid", False, "gen_random_uuid()"),
        "user_id": ("uuid", False, None),
        "key_hash": ("text", False, None),
        "name": ("text", False, "''::text"),
        "prefix": ("text", False, None),
        "is_active": ("boolean", False, "true"),
        "last_used_at": (TIMESTAMPTZ, True, None),
        "expires_at": (TIMESTAMPTZ, True, None),
        "requests_per_minute": ("integer", True, None),
        "images_per_day": ("integer", True, None),
        "created_at": (TIMESTAMPTZ, False, "now()"),
        "updated_at": (TIMESTAMPTZ, False, "now()"),
    },
    "usage": {
        "id": ("uuid", False, "gen_random_uuid()"),
        "api_key_id": ("uuid", False, None),
        "usage_date": ("date", False, None),
        "image_count": ("integer", False, "0"),
        "created_at": (TIMESTAMPTZ, False, "now()"),
        "updated_at": (TIMESTAMPTZ, False, "now()"),
    },
}


async def columns(db: asyncpg.Connection, table: str) -> dict[str, tuple[str, bool, str | None]]:
    rows = await db.fetch(
        """
        SELECT column_name, data_type, is_nullable, column_default
        FROM information_schema.columns
        WHERE table_schema = 'public' AND table_name = $1
        """,
        table,
    )
    return {
        r["column_name"]: (r["data_type"], r["is_nullable"] == "YES", r["column_default"])
        for r in rows
    }


async def index_defs(db: asyncpg.Connection, table: str) -> list[str]:
    rows = await db.fetch(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = $1", table
    )
    return [r["indexdef"] for r in rows]


def has_index(defs: list[str], columns: str, *, unique: bool) -> bool:
    """A btree index (unique or not, as asked) on exactly ``columns``."""
    kind = "UNIQUE INDEX" if unique else "INDEX"
    pattern = re.compile(
        rf"^CREATE {kind} \S+ ON public\.\S+ USING btree \({re.escape(columns)}\)$"
    )
    return any(pattern.match(d) for d in defs)


async def foreign_keys(db: asyncpg.Connection, table: str) -> list[asyncpg.Record]:
    return await db.fetch(
        """
        SELECT c.conname, c.confdeltype::text AS confdeltype, f.relname AS target,
               (SELECT array_agg(a.attname ORDER BY a.attnum) FROM pg_attribute a
                 WHERE a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)) AS cols,
               (SELECT array_agg(a.attname ORDER BY a.attnum) FROM pg_attribute a
                 WHERE a.attrelid = c.confrelid AND a.attnum = ANY (c.confkey)) AS target_cols
        FROM pg_constraint c
        JOIN pg_class t ON t.oid = c.conrelid
        JOIN pg_class f ON f.oid = c.confrelid
        WHERE c.contype = 'f' AND t.relname = $1 AND t.relnamespace = 'public'::regnamespace
        """,
        table,
    )


async def constraint_columns(db: asyncpg.Connection, table: str, contype: str) -> list[list[str]]:
    rows = await db.fetch(
        """
        SELECT (SELECT array_agg(a.attname ORDER BY k.ord)
                  FROM unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)
                  JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum) AS cols
        FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid
        WHERE c.contype::text = $2 AND t.relname = $1 AND t.relnamespace = 'public'::regnamespace
        """,
        table,
        contype,
    )
    return [list(r["cols"]) for r in rows]


async def new_user(db: asyncpg.Connection, **values: object) -> uuid.UUID:
    values.setdefault("email", f"mig-{uuid.uuid4().hex[:12]}@example.com")
    values.setdefault("plan", "free")
    names = ", ".join(values)
    params = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    user_id: uuid.UUID = await db.fetchval(
        f"INSERT INTO users ({names}) VALUES ({params}) RETURNING id",  # noqa: S608
        *values.values(),
    )
    return user_id


async def new_key(db: asyncpg.Connection, user_id: uuid.UUID, **values: object) -> uuid.UUID:
    key = generate_key(KEY_PREFIX)
    values = {"user_id": user_id, "key_hash": hash_key(key), "prefix": key[:12], **values}
    names = ", ".join(values)
    params = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    key_id: uuid.UUID = await db.fetchval(
        f"INSERT INTO api_keys ({names}) VALUES ({params}) RETURNING id",  # noqa: S608
        *values.values(),
    )
    return key_id


async def new_usage(db: asyncpg.Connection, key_id: uuid.UUID, **values: object) -> uuid.UUID:
    values = {"api_key_id": key_id, "usage_date": dt.date(2024, 5, 1), **values}
    names = ", ".join(values)
    params = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    usage_id: uuid.UUID = await db.fetchval(
        f"INSERT INTO usage ({names}) VALUES ({params}) RETURNING id",  # noqa: S608
        *values.values(),
    )
    return usage_id


# -- the catalog ---------------------------------------------------------------------------


async def test_the_three_tables_exist(db: asyncpg.Connection):
    tables = {
        r["table_name"]
        for r in await db.fetch(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
        )
    }
    assert {"users", "api_keys", "usage"} <= tables


@pytest.mark.parametrize("table", list(EXPECTED_COLUMNS))
async def test_columns_have_the_promised_types_nullability_and_defaults(
    db: asyncpg.Connection, table: str
):
    found = await columns(db, table)
    for name, expected in EXPECTED_COLUMNS[table].items():
        assert name in found, f"{table}.{name} is missing"
        assert found[name] == expected, f"{table}.{name}"


@pytest.mark.parametrize("table", list(EXPECTED_COLUMNS))
async def test_id_is_the_primary_key(db: asyncpg.Connection, table: str):
    assert await constraint_columns(db, table, "p") == [["id"]]


async def test_users_email_is_unique_and_normalised(db: asyncpg.Connection):
    assert has_index(await index_defs(db, "users"), "email", unique=True)
    check = await db.fetchval(
        """
        SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c
        WHERE c.conrelid = 'public.users'::regclass AND c.contype = 'c'
          AND pg_get_constraintdef(c.oid) LIKE '%lower(%'
        """
    )
    assert check is not None
    assert "email" in check


async def test_api_keys_user_id_cascades_and_is_indexed(db: asyncpg.Connection):
    fks = await foreign_keys(db, "api_keys")
    assert sorted(
        (fk["cols"], fk["target"], fk["target_cols"], fk["confdeltype"]) for fk in fks
    ) == [
        (["rotated_to"], "api_keys", ["id"], "n"),  # a successor deleted: no successor
        (["user_id"], "users", ["id"], "c"),
    ]
    assert has_index(await index_defs(db, "api_keys"), "user_id", unique=False)


async def test_api_keys_key_hash_is_unique_and_indexed(db: asyncpg.Connection):
    assert has_index(await index_defs(db, "api_keys"), "key_hash", unique=True)


async def test_usage_key_cascades_and_is_unique_per_day(db: asyncpg.Connection):
    fks = await foreign_keys(db, "usage")
    assert [(fk["cols"], fk["target"], fk["target_cols"], fk["confdeltype"]) for fk in fks] == [
        (["api_key_id"], "api_keys", ["id"], "c")
    ]
    assert ["api_key_id", "usage_date"] in await constraint_columns(db, "usage", "u")
    defs = await index_defs(db, "usage")
    assert has_index(defs, "api_key_id, usage_date", unique=True)
    assert has_index(defs, "usage_date", unique=False)


@pytest.mark.parametrize("table", list(EXPECTED_COLUMNS))
async def test_every_table_has_an_updated_at_trigger(db: asyncpg.Connection, table: str):
    triggers = await db.fetch(
        """
        SELECT action_timing, event_manipulation FROM information_schema.triggers
        WHERE event_object_schema = 'public' AND event_object_table = $1
          AND action_statement LIKE '%set_updated_at%'
        """,
        table,
    )
    assert [(t["action_timing"], t["event_manipulation"]) for t in triggers] == [
        ("BEFORE", "UPDATE")
    ]


def test_every_migration_has_a_rollback():
    names = {p.name for p in (ROOT / "migrations").glob("*.sql")}
    forward = {n for n in names if not n.endswith(".rollback.sql")}
    assert forward
    for name in forward:
        assert name.removesuffix(".sql") + ".rollback.sql" in names


def test_applying_again_to_a_migrated_database_does_nothing(database_url: str):
    assert migrate.apply(database_url, ROOT / "migrations") == []


# -- behaviour ------------------------------------------------------------------------------


async def test_deleting_a_user_deletes_its_keys_and_their_usage(db: asyncpg.Connection):
    user_id = await new_user(db)
    other_user = await new_user(db)
    keys = [await new_key(db, user_id), await new_key(db, user_id)]
    other_key = await new_key(db, other_user)
    for key_id in [*keys, other_key]:
        await new_usage(db, key_id, image_count=3)
        await new_usage(db, key_id, usage_date=dt.date(2024, 5, 2), image_count=1)

    await db.execute("DELETE FROM users WHERE id = $1", user_id)

    assert await db.fetchval("SELECT count(*) FROM api_keys WHERE user_id = $1", user_id) == 0
    assert await db.fetchval("SELECT count(*) FROM usage WHERE api_key_id = ANY($1)", keys) == 0
    # Someone else's rows stay.
    assert await db.fetchval("SELECT count(*) FROM api_keys WHERE user_id = $1", other_user) == 1
    assert await db.fetchval("SELECT count(*) FROM usage WHERE api_key_id = $1", other_key) == 2
    await db.execute("DELETE FROM users WHERE id = $1", other_user)


async def test_deleting_a_key_deletes_its_usage(db: asyncpg.Connection):
    user_id = await new_user(db)
    key_id = await new_key(db, user_id)
    await new_usage(db, key_id, image_count=5)
    await db.execute("DELETE FROM api_keys WHERE id = $1", key_id)
    assert await db.fetchval("SELECT count(*) FROM usage WHERE api_key_id = $1", key_id) == 0
    await db.execute("DELETE FROM users WHERE id = $1", user_id)


@pytest.mark.parametrize(
    "email",
    ["Alice@Example.com", "ALICE@EXAMPLE.COM", " alice@example.com", "alice@example.com ", ""],
)
async def test_email_that_is_not_lower_case_and_trimmed_is_rejected(
    db: asyncpg.Connection, email: str
):
    with pytest.raises(asyncpg.CheckViolationError):
        await new_user(db, email=email)


@pytest.mark.parametrize("email", ["alice@example.com\t", "\nalice@example.com"])
async def test_email_padded_with_other_whitespace_is_rejected(db: asyncpg.Connection, email: str):
    try:
        with pytest.raises(asyncpg.CheckViolationError):
            await new_user(db, email=email)
    finally:
        await db.execute("DELETE FROM users WHERE email = $1", email)


async def test_duplicate_email_is_rejected(db: asyncpg.Connection):
    email = f"dup-{uuid.uuid4().hex[:8]}@example.com"
    user_id = await new_user(db, email=email)
    with pytest.raises(asyncpg.UniqueViolationError):
        await new_user(db, email=email)
    await db.execute("DELETE FROM users WHERE id = $1", user_id)


async def test_new_user_defaults(db: asyncpg.Connection):
    user_id = await new_user(db)
    row = await db.fetchrow("SELECT * FROM users WHERE id = $1", user_id)
    assert row["is_active"] is True
    assert row["password_hash"] is None
    assert row["created_at"] == row["updated_at"]
    assert abs(row["created_at"] - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5)
    await db.execute("DELETE FROM users WHERE id = $1", user_id)


async def test_a_key_must_belong_to_an_existing_user(db: asyncpg.Connection):
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await new_key(db, uuid.uuid4())


async def test_key_hash_must_be_a_sha256_hex_digest_not_a_key(db: asyncpg.Connection):
    user_id = await new_user(db)
    key = generate_key(KEY_PREFIX)
    with pytest.raises(asyncpg.CheckViolationError):
        await new_key(db, user_id, key_hash=key)
    with pytest.raises(asyncpg.CheckViolationError):
        await new_key(db, user_id, key_hash=hash_key(key).upper())
    key_id = await new_key(db, user_id, key_hash=hash_key(key))
    row = await db.fetchrow("SELECT * FROM api_keys WHERE id = $1", key_id)
    assert row["is_active"] is True
    assert row["name"] == ""
    assert row["requests_per_minute"] is None
    assert row["images_per_day"] is None
    with pytest.raises(asyncpg.UniqueViolationError):
        await new_key(db, user_id, key_hash=hash_key(key))
    await db.execute("DELETE FROM users WHERE id = $1", user_id)


@pytest.mark.parametrize("column", ["requests_per_minute", "images_per_day"])
async def test_per_key_limits_must_be_positive(db: asyncpg.Connection, column: str):
    user_id = await new_user(db)
    with pytest.raises(asyncpg.CheckViolationError):
        await new_key(db, user_id, **{column: 0})
    await db.execute("DELETE FROM users WHERE id = $1", user_id)


async def test_usage_is_one_row_per_key_per_day_and_never_negative(db: asyncpg.Connection):
    user_id = await new_user(db)
    key_id = await new_key(db, user_id)
    usage_id = await new_usage(db, key_id)
    assert await db.fetchval("SELECT image_count FROM usage WHERE id = $1", usage_id) == 0
    with pytest.raises(asyncpg.UniqueViolationError):
        await new_usage(db, key_id)
    with pytest.raises(asyncpg.CheckViolationError):
        await new_usage(db, key_id, usage_date=dt.date(2024, 5, 9), image_count=-1)
    with pytest.raises(asyncpg.NotNullViolationError):
        await new_usage(db, key_id, usage_date=dt.date(2024, 5, 10), image_count=None)
    await db.execute("DELETE FROM users WHERE id = $1", user_id)


@pytest.mark.parametrize(
    ("table", "change"),
    [
        ("users", "plan = 'pro'"),
        ("api_keys", "is_active = false"),
        ("usage", "image_count = image_count + 1"),
    ],
)
async def test_updated_at_changes_on_update(db: asyncpg.Connection, table: str, change: str):
    user_id = await new_user(db, created_at=LONG_AGO, updated_at=LONG_AGO)
    key_id = await new_key(db, user_id, created_at=LONG_AGO, updated_at=LONG_AGO)
    usage_id = await new_usage(db, key_id, created_at=LONG_AGO, updated_at=LONG_AGO)
    row_id = {"users": user_id, "api_keys": key_id, "usage": usage_id}[table]

    before = await db.fetchrow(f"SELECT created_at, updated_at FROM {table} WHERE id = $1", row_id)  # noqa: S608
    assert before["updated_at"] == LONG_AGO
    await db.execute(f"UPDATE {table} SET {change} WHERE id = $1", row_id)  # noqa: S608
    after = await db.fetchrow(f"SELECT created_at, updated_at FROM {table} WHERE id = $1", row_id)  # noqa: S608

    assert after["created_at"] == LONG_AGO
    assert after["updated_at"] > LONG_AGO
    assert abs(after["updated_at"] - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5)
    await db.execute("DELETE FROM users WHERE id = $1", user_id)


async def test_updated_at_cannot_be_set_by_hand(db: asyncpg.Connection):
    user_id = await new_user(db)
    await db.execute("UPDATE users SET updated_at = $2 WHERE id = $1", user_id, LONG_AGO)
    updated = await db.fetchval("SELECT updated_at FROM users WHERE id = $1", user_id)
    assert updated > LONG_AGO
    await db.execute("DELETE FROM users WHERE id = $1", user_id)
