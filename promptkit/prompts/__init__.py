"""Prompts: the template sandbox, template families, variants (axis grids, stable ids), rendering, lint and noise."""
