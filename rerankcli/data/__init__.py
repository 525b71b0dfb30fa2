"""Corpus, queries and qrels from local files (BEIR, TSV, TREC) and from ir_datasets."""
