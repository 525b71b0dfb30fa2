"""Metrics equal to trec_eval's, significance tests and comparisons between runs, reports, plots."""
