-- depends: 0010.usage-by-model
-- Usage events for credit ledger entries, made once per INSERT statement rather than once
-- per row: the flusher appends a batch of entries (one per charged request) in one
-- statement, and a row trigger cost Postgres a function call per entry, events wanted
-- or not. The events are the same, in the entries' order.

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
