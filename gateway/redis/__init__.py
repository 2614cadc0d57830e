"""Everything that speaks to Redis: the client factories, the pipelined hot-path
connection (and its Redis Cluster form, routed by slot), pub/sub on one Redis or a
cluster, the key layout and the Lua loader."""
