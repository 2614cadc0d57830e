"""Usage accounting: the write-behind of live counters to Postgres."""
