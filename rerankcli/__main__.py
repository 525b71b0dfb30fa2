"""``python -m rerankcli`` runs the same command-line tool as ``rerank``."""

from rerankcli.cli import main

if __name__ == "__main__":
    main()
