"""Rerank stages: reorder the top-``depth`` candidates of the input run with a model.

``candidates.py`` holds what every rerank stage shares (candidates in, merged run out) and
``llm_method.py`` what every LLM method shares (model, backend, template, accounting); one
module per method family (``pointwise``, ``listwise``, ``pairwise``, ``icr``,
``cross_encoder``); ``templates.py`` reads the prompt templates shipped in ``prompts/``.
"""
