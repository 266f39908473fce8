"""The names the statistics options accept (scoring modes, aggregates, protocols), in a module that imports
nothing, so that building the command line costs no numpy, pandas or scipy."""

MODES = ("raw", "per_token", "per_char", "calibrated")
AGGREGATES = ("mean_norm", "mean", "mean_rank", "win_rate", "worst")
DEFAULT_AGGREGATE = "mean_norm"
PROTOCOLS = ("split", "kfold", "loto", "cluster")
