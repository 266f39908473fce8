"""Tasks: the canonical Example/Task/Suite records (core), suite files and task loading (suites), and where examples come from (sources)."""
