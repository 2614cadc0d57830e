"""SQL functions that take an asyncpg connection or pool. No ORM, parameters only."""
