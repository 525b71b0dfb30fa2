"""Language-model backends: transformers, vLLM and OpenAI-compatible servers behind one interface.

Rerank methods never talk to a model directly. They yield *requests* (``requests.py``); a
backend (``hf.py``, ``vllm.py``, ``openai.py``) answers a whole batch of them; the scheduler
(``scheduler.py``) keeps that batch full across queries.
"""
