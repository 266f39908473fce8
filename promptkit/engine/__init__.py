"""The engine: request planning (dedupe, cache lookup, sharding) and execution, the SQLite result cache, data parallelism."""
