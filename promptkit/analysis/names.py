"""The names the statistics options accept (scoring modes, aggregates, protocols), and the one way a number is
printed, in a module that imports nothing, so that building the command line costs no numpy, pandas or scipy."""

MODES = ("raw", "per_token", "per_char", "calibrated")
AGGREGATES = ("mean_norm", "mean", "mean_rank", "win_rate", "worst")
DEFAULT_AGGREGATE = "mean_norm"
LOWER_IS_BETTER = ("mean_rank",)  # every other aggregate: higher is better
MEANING = {
    "mean_norm": "mean over tasks of accuracy rescaled so that chance is 0 and perfect is 1 on every task; higher is better",
    "mean": "mean accuracy over tasks; higher is better",
    "mean_rank": "mean over tasks of the prompt's rank on the task (1 = best); lower is better",
    "win_rate": "share of (task, other prompt) pairs the prompt beats, ties counting half; higher is better",
    "worst": "the prompt's lowest chance-normalized accuracy over tasks; higher is better",
}
PROTOCOLS = ("split", "kfold", "loto", "cluster")


def num(value, digits: int = 3, sign: bool = False) -> str:
    """`value` with `digits` decimals; a value that rounds to zero prints as 0.000, never -0.000 (nor +0.000
    with `sign`); NaN prints as nan."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    if x != x:
        return "nan"
    text = f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"
    return text.lstrip("+-") if float(text) == 0 else text
