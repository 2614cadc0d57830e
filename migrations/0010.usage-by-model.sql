-- depends: 0009.billing-events
-- Usage that can be billed: each key's images and credits per UTC day, per model and per
-- backend that made them. `usage` keeps the day's total (what the daily quota reads); these
-- rows break it down, written behind from Redis like it, with absolute values read at
-- `counted_at` (a flush only overwrites an older reading). Images and credits are those
-- charged: reserved at admission and given back when not delivered. Rows from before this
-- migration keep their counts under model and backend '' (not recorded then), with the
-- credits the ledger charged the key that day.
CREATE TABLE usage_by_model (
    api_key_id  uuid        NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    usage_date  date        NOT NULL,
    model       text        NOT NULL,
    backend     text        NOT NULL,
    image_count integer     NOT NULL DEFAULT 0 CHECK (image_count >= 0),
    credits     bigint      NOT NULL DEFAULT 0 CHECK (credits >= 0),
    counted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (api_key_id, usage_date, model, backend)
);
CREATE INDEX usage_by_model_date_idx ON usage_by_model (usage_date);

INSERT INTO usage_by_model (api_key_id, usage_date, model, backend, image_count, credits,
                            counted_at)
SELECT u.api_key_id, u.usage_date, '', '', u.image_count,
       GREATEST(0, COALESCE((
           SELECT -SUM(l.amount) FROM credit_ledger l
           WHERE l.api_key_id = u.api_key_id AND l.kind IN ('charge', 'refund')
             AND (l.created_at AT TIME ZONE 'UTC')::date = u.usage_date), 0)),
       u.counted_at
FROM usage u;

-- A job's reservation is counted under its model and the backend planned at admission:
-- its settlement gives back under the same label.
ALTER TABLE image_jobs ADD COLUMN charge_backend text NOT NULL DEFAULT '';

-- Usage events for billing systems (0009) now come from these rows: each carries its model,
-- backend and credits. `images_that_day` is the row's total (that model and backend).
DROP TRIGGER usage_billing_event ON usage;
DROP FUNCTION usage_billing_event();
CREATE FUNCTION usage_billing_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    images integer;
    credits bigint;
BEGIN
    IF NOT billing_events_wanted() THEN
        RETURN NULL;
    END IF;
    images := NEW.image_count - CASE WHEN TG_OP = 'UPDATE' THEN OLD.image_count ELSE 0 END;
    credits := NEW.credits - CASE WHEN TG_OP = 'UPDATE' THEN OLD.credits ELSE 0 END;
    IF images <> 0 OR credits <> 0 THEN
        INSERT INTO billing_events (type, user_id, data)
        SELECT 'usage.images', k.user_id, jsonb_build_object(
            'api_key_id', NEW.api_key_id,
            'date', NEW.usage_date,
            'model', NEW.model,
            'backend', NEW.backend,
            'images', images,
            'credits', credits,
            'images_that_day', NEW.image_count)
        FROM api_keys k WHERE k.id = NEW.api_key_id;
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER usage_billing_event AFTER INSERT OR UPDATE OF image_count, credits
    ON usage_by_model FOR EACH ROW EXECUTE FUNCTION usage_billing_event();
