"""The sandboxed jinja2 environment chat templates are rendered in, set up the way
``transformers`` renders ``chat_template`` (its ``tojson`` filter, ``raise_exception`` and
``strftime_now`` helpers)."""

from __future__ import annotations

import functools
import json
from datetime import datetime
from typing import Any, NoReturn

import jinja2
import jinja2.ext
import jinja2.sandbox


def _raise_exception(message: str) -> NoReturn:
    """``raise_exception`` helper available to chat templates, as in transformers."""
    raise jinja2.TemplateError(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    """transformers' ``tojson`` filter: plain JSON, not HTML-escaped like jinja2's own."""
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(fmt: str) -> str:
    """``strftime_now`` helper available to chat templates, as in transformers."""
    return datetime.now().strftime(fmt)


@functools.lru_cache(maxsize=1)
def chat_environment() -> jinja2.sandbox.ImmutableSandboxedEnvironment:
    """The sandboxed jinja2 environment chat templates are rendered in (transformers' setup)."""
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env

