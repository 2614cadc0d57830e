"""Credits: what images cost (:mod:`.pricing`), users' balances (:mod:`.balances`) and
the durable ledger they are rebuilt from (:mod:`gateway.db.credits`)."""

__all__: list[str] = []
