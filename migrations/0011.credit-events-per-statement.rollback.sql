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
