-- depends: 0007.credit-ledger
-- Usage events for billing systems: every change of a (key, day) usage count and every
-- credit ledger entry becomes a row here, in the same transaction as the change, while
-- billing_settings says so (the gateway sets it at start-up: on when billing.events_url
-- is configured), whoever writes the change. The sender posts them as
-- CloudEvents and deletes them once the receiver took them: nothing is lost while the
-- receiver is down, and an event's id (this row's) is the same on every retry.

CREATE TABLE billing_events (
    id           bigserial   PRIMARY KEY,
    -- 'usage.images', or 'credits.' || the ledger entry's kind.
    type         text        NOT NULL,
    user_id      uuid        NOT NULL,
    data         jsonb       NOT NULL,
    occurred_at  timestamptz NOT NULL DEFAULT now(),
    attempts     integer     NOT NULL DEFAULT 0,
    due_at       timestamptz NOT NULL DEFAULT now(),
    leased_until timestamptz
);
CREATE INDEX billing_events_due ON billing_events (due_at, id);

CREATE TABLE billing_settings (
    singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    events_wanted boolean NOT NULL DEFAULT false
);
INSERT INTO billing_settings DEFAULT VALUES;

CREATE FUNCTION billing_events_wanted() RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT events_wanted FROM billing_settings), false)
$$;

CREATE FUNCTION usage_billing_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    delta integer;
BEGIN
    IF NOT billing_events_wanted() THEN
        RETURN NULL;
    END IF;
    delta := NEW.image_count - CASE WHEN TG_OP = 'UPDATE' THEN OLD.image_count ELSE 0 END;
    IF delta <> 0 THEN
        INSERT INTO billing_events (type, user_id, data)
        SELECT 'usage.images', k.user_id, jsonb_build_object(
            'api_key_id', NEW.api_key_id,
            'date', NEW.usage_date,
            'images', delta,
            'images_that_day', NEW.image_count)
        FROM api_keys k WHERE k.id = NEW.api_key_id;
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER usage_billing_event AFTER INSERT OR UPDATE OF image_count ON usage
    FOR EACH ROW EXECUTE FUNCTION usage_billing_event();

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
