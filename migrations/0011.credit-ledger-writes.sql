-- depends: 0010.usage-by-model
-- Writing the credit ledger cheaply. The flusher appends a row per charged request, in
-- statements of a few hundred rows; per row, Postgres spent more on checks than on the
-- row (BENCHMARKS.md, "Credits"):
--
-- * Billing events for ledger entries are made once per INSERT statement, not by a row
--   trigger (a function call per entry, events wanted or not). The same events, in the
--   entries' order.
-- * The ledger keeps the user and key ids it was written with, without foreign keys
--   (each checked every row and locked its user's and key's rows). A ledger is history:
--   deleting a key no longer fails on its entries (the key constraint's SET NULL was an
--   UPDATE, which the append-only trigger refused), and they keep its id. Deleting a
--   user still deletes the user's entries, by a trigger on users.

DROP TRIGGER credit_billing_event ON credit_ledger;
DROP FUNCTION credit_billing_event();

CREATE FUNCTION credit_billing_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF billing_events_wanted() THEN
        INSERT INTO billing_events (type, user_id, data, occurred_at)
        SELECT 'credits.' || e.kind, e.user_id, jsonb_build_object(
                   'entry_id', e.entry_id,
                   'api_key_id', e.api_key_id,
                   'credits', e.amount,
                   'monthly_delta', e.monthly_delta,
                   'purchased_delta', e.purchased_delta,
                   'reference', e.reference,
                   'reason', e.reason), e.created_at
        FROM added e
        ORDER BY e.id;
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER credit_billing_events AFTER INSERT ON credit_ledger
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION credit_billing_events();

ALTER TABLE credit_ledger
    DROP CONSTRAINT credit_ledger_user_id_fkey,
    DROP CONSTRAINT credit_ledger_api_key_id_fkey;

CREATE FUNCTION credit_ledger_forget_users() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM credit_ledger l USING gone g WHERE l.user_id = g.id;
    RETURN NULL;
END;
$$;
CREATE TRIGGER credit_ledger_forget_users AFTER DELETE ON users
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION credit_ledger_forget_users();
