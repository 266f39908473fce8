"""Results: the Results object, the run directory (one writer, one reader), the HTML report, plots and text tables."""
