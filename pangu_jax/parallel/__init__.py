"""Multi-device training: mesh and sharding rules, expert parallelism, pipeline, placement, multi-host."""
