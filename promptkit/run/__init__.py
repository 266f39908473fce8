"""The run: options → plan → render → execute → collect (evaluate), budgeted search, synthetic demonstrations."""
