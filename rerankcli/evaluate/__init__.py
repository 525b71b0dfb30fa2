"""Metrics equal to trec_eval's, reports, and (later) comparisons between runs."""
