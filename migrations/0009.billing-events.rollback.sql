DROP TRIGGER IF EXISTS credit_billing_event ON credit_ledger;
DROP FUNCTION IF EXISTS credit_billing_event();
DROP TRIGGER IF EXISTS usage_billing_event ON usage;
DROP FUNCTION IF EXISTS usage_billing_event();
DROP FUNCTION IF EXISTS billing_events_wanted();
DROP TABLE IF EXISTS billing_settings;
DROP TABLE IF EXISTS billing_events;
