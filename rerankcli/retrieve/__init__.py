"""First-stage retrieval (BM25 with several backends, dense) and fusion of runs."""
