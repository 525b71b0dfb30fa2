"""Rerank stages: reorder the top-``depth`` candidates of the input run with a model.

``stage.py`` holds what every rerank stage shares (candidates in, merged run out);
``pointwise.py`` the LLM pointwise methods, ``cross_encoder.py`` sentence-transformers'
cross-encoders; ``prompts.py`` the prompt templates shipped in ``prompts/``.
"""
