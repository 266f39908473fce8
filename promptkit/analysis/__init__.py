"""Analysis: per-example metrics and scoring modes, rankings, statistics, sensitivity, robustness and the run's statistical report."""
