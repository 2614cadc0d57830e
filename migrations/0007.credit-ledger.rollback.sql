ALTER TABLE image_jobs
    DROP COLUMN charge_price,
    DROP COLUMN charge_purchased,
    DROP COLUMN charge_month;
DROP TABLE credit_ledger;
DROP FUNCTION credit_ledger_append_only();
