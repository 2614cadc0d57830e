DROP TRIGGER usage_billing_event ON usage_by_model;
DROP FUNCTION usage_billing_event();
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
ALTER TABLE image_jobs DROP COLUMN charge_backend;
DROP TABLE usage_by_model;
