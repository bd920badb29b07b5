"""Phi-4-mini's special tokens, vocabulary size, eos / end / bos / pad tokens and chat template.

The chat format: one ``<|role|>content<|end|>`` block per message, then ``<|assistant|>``::

    <|system|>{system}<|end|><|user|>{question}<|end|><|assistant|>
"""

from __future__ import annotations

# Special tokens of Phi-4-mini at their official ids. Written down from memory of the
# official tokenizer.json ("added_tokens") of microsoft/Phi-4-mini-instruct /
# Phi-4-mini-flash-reasoning, not copied from a file: no official file is available
# offline here. 199999 and 200018 agree with tiktoken's own o200k_base definition
# (<|endoftext|>, <|endofprompt|>), which the tests check.
PHI4_SPECIAL_TOKENS: dict[str, int] = {
    "<|endoftext|>": 199999,
    "<|endofprompt|>": 200018,
    "<|assistant|>": 200019,
    "<|end|>": 200020,
    "<|user|>": 200021,
    "<|system|>": 200022,
    "<|tool|>": 200023,
    "<|/tool|>": 200024,
    "<|tool_call|>": 200025,
    "<|/tool_call|>": 200026,
    "<|tool_response|>": 200027,
    "<|tag|>": 200028,
}

# The model's embedding is padded to 200064 rows. Ids in that range with no token (199998,
# 200000-200017, 200029-200063) decode to "" so that sampling one never crashes a stream.
PHI4_VOCAB_SIZE = 200064

PHI4_EOS_TOKEN = "<|endoftext|>"
PHI4_END_TOKEN = "<|end|>"  # closes every chat turn; generation stops on it
# Phi-4-mini's tokenizer_config.json uses <|endoftext|> as bos and pad as well (from
# memory); the Phi chat template never emits a bos token.
PHI4_BOS_TOKEN = "<|endoftext|>"
PHI4_PAD_TOKEN = "<|endoftext|>"

# Phi chat format: one "<|role|>content<|end|>" block per message (a system message only
# when given), then "<|assistant|>" to prompt a reply, or eos to close a full conversation.
PHI4_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('Unsupported chat role: ' + message['role'] "
    "+ ' (expected system, user or assistant)') }}"
    "{% endif %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% else %}{{ eos_token }}{% endif %}"
)
