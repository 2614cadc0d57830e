"""Everything that speaks to Redis: the client factory, the pipelined hot-path
connection, the key layout and the Lua loader."""
