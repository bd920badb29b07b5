"""``sambay serve``: an OpenAI-compatible HTTP server on the continuous-batching engine.

Modules, one concern each: ``protocol`` (the OpenAI request and response schemas),
``reasoning_parser`` (``<think>...</think>`` to ``reasoning_content``), ``engine_loop`` (the
engine's stepping thread and the hand-over to asyncio), ``metrics`` (Prometheus), ``app`` (the
FastAPI endpoints and errors).

    from reasoning import load
    from reasoning.server import build_app, serve
    serve(build_app(load(), model_name="sambay-builtin"), port=8000)
"""

from .app import APIError, build_app, serve
from .reasoning_parser import ReasoningParser, parse_reasoning

__all__ = ["APIError", "ReasoningParser", "build_app", "parse_reasoning", "serve"]
