"""Where examples come from: BIG-bench JSON tasks, local files, and `datasets` hub ids."""
