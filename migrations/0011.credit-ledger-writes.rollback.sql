DROP TRIGGER IF EXISTS credit_ledger_forget_users ON users;
DROP FUNCTION IF EXISTS credit_ledger_forget_users();
-- NOT VALID: entries written meanwhile may name keys deleted since.
ALTER TABLE credit_ledger
    ADD CONSTRAINT credit_ledger_user_id_fkey
        FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE NOT VALID,
    ADD CONSTRAINT credit_ledger_api_key_id_fkey
        FOREIGN KEY (api_key_id) REFERENCES api_keys (id) ON DELETE SET NULL NOT VALID;

DROP TRIGGER IF EXISTS credit_billing_events ON credit_ledger;
DROP FUNCTION IF EXISTS credit_billing_events();

CREATE FUNCTION credit_billing_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF billing_events_wanted() THEN
        INSERT INTO billing_events (type, user_id, data, occurred_at)
        VALUES ('credits.' || NEW.kind, NEW.user_id, jsonb_build_object(
            'entry_id', NEW.entry_id,
            'api_key_id', NEW.api_key_id,
            'credits', NEW.amount,
            'monthly_delta', NEW.monthly_delta,
            'purchased_delta', NEW.purchased_delta,
            'reference', NEW.reference,
            'reason', NEW.reason), NEW.created_at);
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER credit_billing_event AFTER INSERT ON credit_ledger
    FOR EACH ROW EXECUTE FUNCTION credit_billing_event();
