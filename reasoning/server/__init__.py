"""``sambay serve``: an OpenAI-compatible HTTP server on the continuous-batching engine.

Modules, one concern each: ``protocol`` (the OpenAI request and response schemas),
``reasoning_parser`` (``<think>...</think>`` to ``reasoning_content``), ``engine_process`` (the
engine stepping in a process of its own, and the hand-over to asyncio), ``metrics`` (Prometheus),
``app`` (the FastAPI endpoints and errors).

    import functools
    from reasoning import load
    from reasoning.server import EngineProcess, build_app, serve

    if __name__ == "__main__":  # the engine process is spawned: guard what starts it
        engine = EngineProcess(functools.partial(load, device="cpu"))
        serve(build_app(engine, model_name="sambay-builtin"), port=8000)
"""

from .app import APIError, build_app, serve
from .engine_process import EngineProcess
from .reasoning_parser import ReasoningParser, parse_reasoning

__all__ = ["APIError", "EngineProcess", "ReasoningParser", "build_app", "parse_reasoning", "serve"]
