-- depends: 0005.webhooks
-- Credits: the append-only ledger every balance change is written to (behind, in batches,
-- from each Redis shard's stream), from which a user's balances are rebuilt after Redis
-- loses them. entry_id makes a repeated write of the same entry a no-op. A job keeps
-- what its credit reservation needs to be settled from any process.

CREATE TABLE credit_ledger (
    id              bigserial   PRIMARY KEY,
    -- Stable for each change: the admission's unique member for a charge (+ ':r' for its
    -- refund), 'reset:<user>:<month>', 'grant:<digest of the Idempotency-Key>'.
    entry_id        text        NOT NULL UNIQUE,
    user_id         uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    api_key_id      uuid        REFERENCES api_keys (id) ON DELETE SET NULL,
    kind            text        NOT NULL
                    CHECK (kind IN ('monthly_reset', 'grant', 'charge', 'refund', 'adjust')),
    -- The change of the user's total balance (a monthly_reset: the allowance it sets).
    amount          bigint      NOT NULL,
    -- The same split by balance: the month's allowance and the purchased credits.
    monthly_delta   bigint      NOT NULL DEFAULT 0,
    purchased_delta bigint      NOT NULL DEFAULT 0,
    -- The month (since 1970-01, UTC) whose allowance the entry touches.
    month           integer     NOT NULL,
    -- The request or job id (charges, refunds).
    reference       text,
    reason          text,
    created_at      timestamptz NOT NULL
);
CREATE INDEX credit_ledger_user ON credit_ledger (user_id, id DESC);

CREATE FUNCTION credit_ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'credit_ledger is append-only';
END;
$$;
CREATE TRIGGER credit_ledger_no_update BEFORE UPDATE ON credit_ledger
    FOR EACH ROW EXECUTE FUNCTION credit_ledger_append_only();

ALTER TABLE image_jobs
    ADD COLUMN charge_price     integer NOT NULL DEFAULT 0,
    ADD COLUMN charge_purchased integer NOT NULL DEFAULT 0,
    ADD COLUMN charge_month     integer NOT NULL DEFAULT -1;
