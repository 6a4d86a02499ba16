"""Machinery that model adapters share and that names no model: typed options, chat prompts
and generation through transformers or vLLM, level-token scoring, an OpenAI-compatible client."""
