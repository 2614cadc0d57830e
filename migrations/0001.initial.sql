-- Users, their API keys, and images counted per key per UTC day.

CREATE FUNCTION set_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE TABLE users (
    id            uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    email         text        NOT NULL,
    password_hash text,
    plan          text        NOT NULL,
    is_active     boolean     NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    -- Normalised: lower case, no surrounding white space of any kind, not empty.
    CONSTRAINT users_email_normalised CHECK (
        email = lower(email) AND email !~ '^\s|\s$' AND email <> ''
    )
);
CREATE UNIQUE INDEX users_email_key ON users (email);
CREATE TRIGGER users_set_updated_at BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE api_keys (
    id                  uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id             uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key_hash            text        NOT NULL,
    name                text        NOT NULL DEFAULT '',
    prefix              text        NOT NULL,
    is_active           boolean     NOT NULL DEFAULT true,
    last_used_at        timestamptz,
    expires_at          timestamptz,
    requests_per_minute integer     CHECK (requests_per_minute > 0),
    images_per_day      integer     CHECK (images_per_day > 0),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT api_keys_key_hash_sha256 CHECK (key_hash ~ '^[0-9a-f]{64}$')
);
CREATE UNIQUE INDEX api_keys_key_hash_key ON api_keys (key_hash);
CREATE INDEX api_keys_user_id_idx ON api_keys (user_id);
CREATE TRIGGER api_keys_set_updated_at BEFORE UPDATE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE usage (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    api_key_id  uuid        NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    usage_date  date        NOT NULL,
    image_count integer     NOT NULL DEFAULT 0 CHECK (image_count >= 0),
    -- When (by the Redis clock) image_count was read from the live counter. A flush
    -- only overwrites an older reading, so concurrent flushers cannot go backwards.
    counted_at  timestamptz NOT NULL DEFAULT now(),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT usage_key_date_key UNIQUE (api_key_id, usage_date)
);
CREATE INDEX usage_usage_date_idx ON usage (usage_date);
CREATE TRIGGER usage_set_updated_at BEFORE UPDATE ON usage
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
