"""Tests for reasoning.tokenizer: both backends, chat templates, streaming, loading."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import jinja2
import pytest
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from reasoning.tokenizer import (
    BPE_ENV_VAR,
    O200K_BPE_URL,
    O200K_CACHE_NAME,
    O200K_PATTERN,
    PHI4_CHAT_TEMPLATE,
    PHI4_SPECIAL_TOKENS,
    PHI4_VOCAB_SIZE,
    MissingTokenizerFile,
    StreamDecoder,
    Tokenizer,
    TokenizerFileError,
    find_o200k_bpe,
    load_tokenizer,
)

BPE_FILE = Path(__file__).resolve().parents[1].parent / "shared/tokenizers/o200k_base.tiktoken"
needs_bpe = pytest.mark.skipif(not BPE_FILE.is_file(), reason=f"o200k_base BPE file not found at {BPE_FILE}")

# Text covering special tokens, multi-byte characters split across byte-level tokens,
# LaTeX and odd whitespace.
SAMPLES = [
    "Hello world",
    "<|system|>You are Phi.<|end|><|user|>What is 2+2?<|end|><|assistant|>4<|end|><|endoftext|>",
    "emoji 😀👩‍👩‍👧 and flags 🇫🇷, CJK 中文字符 日本語 한국어",
    r"$\frac{a}{b} + \sqrt{x^2} = \boxed{42}$ and \(\alpha \le \beta\)",
    "math 𝔸𝔹ℂ ∑∫∂ ≤ ≥ ≠, combining e\u0301 and tabs\t\tand\n\n\r\nnewlines  ",
    "<|end|><|end|>no space<|tool_call|>{\"x\": 1}<|/tool_call|>",
    "",
]


@pytest.fixture(scope="module")
def phi4() -> Tokenizer:
    if not BPE_FILE.is_file():
        pytest.skip(f"o200k_base BPE file not found at {BPE_FILE}")
    return load_tokenizer(bpe_file=BPE_FILE)


def _train_tiny_hf() -> tokenizers.Tokenizer:
    """A byte-level BPE trained on a few sentences, with the Phi-4 special tokens."""
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=list(PHI4_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [
        "12 + 34 = 46",
        "What is 7 * 6? The answer is \\boxed{42}.",
        "Let x = 3. Then 2x + 1 = 7.",
    ] * 20
    tok.train_from_iterator(corpus, trainer)
    return tok


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hf_tok")
    Tokenizer.from_hf(_train_tiny_hf(), chat_template=PHI4_CHAT_TEMPLATE).save(folder)
    return folder


@pytest.fixture(scope="module")
def hf(hf_folder: Path) -> Tokenizer:
    return load_tokenizer(hf_folder)


# ----------------------------------------------------------------------------------------
# tiktoken backend (real Phi-4 tokenization)
# ----------------------------------------------------------------------------------------


def test_hello_world(phi4: Tokenizer) -> None:
    assert phi4.backend == "tiktoken"
    assert phi4.encode("Hello world") == [13225, 2375]
    assert phi4.decode([13225, 2375]) == "Hello world"


def test_phi4_special_ids(phi4: Tokenizer) -> None:
    expected = {
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
    assert PHI4_SPECIAL_TOKENS == expected
    assert phi4.special_tokens == expected
    for token, token_id in expected.items():
        assert phi4.token_to_id(token) == token_id
        assert phi4.encode(token) == [token_id]
        assert phi4.decode([token_id]) == token
    assert phi4.vocab_size == PHI4_VOCAB_SIZE == 200064
    assert phi4.eos_token_id == 199999
    assert phi4.end_token_id == 200020
    assert phi4.pad_token_id == 199999
    assert phi4.stop_token_ids == {199999, 200020}


def test_phi4_matches_tiktoken_o200k_definition(monkeypatch: pytest.MonkeyPatch) -> None:
    """The written-down pattern and shared special ids equal tiktoken's own o200k_base."""
    from tiktoken_ext import openai_public

    monkeypatch.setattr(openai_public, "load_tiktoken_bpe", lambda *args, **kwargs: {})  # no download
    definition = openai_public.o200k_base()
    assert definition["pat_str"] == O200K_PATTERN
    for token, token_id in definition["special_tokens"].items():
        assert PHI4_SPECIAL_TOKENS[token] == token_id
    assert hashlib.sha1(O200K_BPE_URL.encode()).hexdigest() == O200K_CACHE_NAME


@pytest.mark.parametrize("text", SAMPLES)
def test_phi4_round_trip(phi4: Tokenizer, text: str) -> None:
    assert phi4.decode(phi4.encode(text)) == text
    assert phi4.decode(phi4.encode(text, allow_special=False)) == text


def test_phi4_allow_special_false_encodes_text(phi4: Tokenizer) -> None:
    ids = phi4.encode("a<|end|>b", allow_special=False)
    assert 200020 not in ids and len(ids) > 3
    assert phi4.decode(ids) == "a<|end|>b"
    assert phi4.encode("a<|end|>b") == [*phi4.encode("a"), 200020, *phi4.encode("b")]


def test_phi4_skip_special_and_unused_ids(phi4: Tokenizer) -> None:
    ids = phi4.encode("<|user|>hi<|end|><|assistant|>")
    assert phi4.decode(ids, skip_special=True) == "hi"
    # Padding ids and unused ids in the o200k range have no token: they decode to "".
    assert phi4.decode([199998, 200005, 200029, 200063]) == ""
    assert phi4.decode([13225, 200063, 2375]) == "Hello world"
    with pytest.raises(ValueError, match="outside the vocabulary"):
        phi4.decode([200064])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        phi4.decode([-1])
    with pytest.raises(KeyError):
        phi4.token_to_id("<|not_a_token|>")


def test_phi4_chat_prompt(phi4: Tokenizer) -> None:
    assert phi4.chat_template == PHI4_CHAT_TEMPLATE
    assert phi4.chat_prompt("What is 2+2?") == "<|user|>What is 2+2?<|end|><|assistant|>"
    system = "Your name is Phi, an AI math expert developed by Microsoft."
    prompt = phi4.chat_prompt("What is 2+2?", system=system)
    assert prompt == f"<|system|>{system}<|end|><|user|>What is 2+2?<|end|><|assistant|>"
    ids = phi4.encode(prompt)
    assert ids[0] == 200022 and ids[-2:] == [200020, 200019]
    conversation = [
        {"role": "user", "content": "1+1?"},
        {"role": "assistant", "content": "\\boxed{2}"},
    ]
    assert phi4.apply_chat_template(conversation, add_generation_prompt=False) == (
        "<|user|>1+1?<|end|><|assistant|>\\boxed{2}<|end|><|endoftext|>"
    )
    with pytest.raises(jinja2.TemplateError, match="Unsupported chat role"):
        phi4.apply_chat_template([{"role": "robot", "content": "x"}])


def test_phi4_accepts_tensor_ids(phi4: Tokenizer) -> None:
    torch = pytest.importorskip("torch")
    assert phi4.decode(torch.tensor([13225, 2375])) == "Hello world"


# ----------------------------------------------------------------------------------------
# Finding the BPE file
# ----------------------------------------------------------------------------------------


def _no_bpe_anywhere(monkeypatch: pytest.MonkeyPatch, cache_dir: Path) -> None:
    monkeypatch.delenv(BPE_ENV_VAR, raising=False)
    monkeypatch.delenv("DATA_GYM_CACHE_DIR", raising=False)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache_dir))


def test_missing_bpe_file_says_how_to_provide_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _no_bpe_anywhere(monkeypatch, tmp_path)
    with pytest.raises(FileNotFoundError) as info:
        load_tokenizer()
    message = str(info.value)
    for hint in ("bpe_file=", BPE_ENV_VAR, O200K_CACHE_NAME, str(tmp_path), O200K_BPE_URL):
        assert hint in message
    assert list(tmp_path.iterdir()) == []  # nothing was downloaded or written

    with pytest.raises(FileNotFoundError, match="bpe_file"):
        load_tokenizer(bpe_file=tmp_path / "missing.tiktoken")
    monkeypatch.setenv(BPE_ENV_VAR, str(tmp_path / "missing.tiktoken"))
    with pytest.raises(FileNotFoundError, match=BPE_ENV_VAR):
        load_tokenizer()


@needs_bpe
def test_bpe_file_from_env_and_tiktoken_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _no_bpe_anywhere(monkeypatch, tmp_path)
    (tmp_path / O200K_CACHE_NAME).symlink_to(BPE_FILE)
    assert find_o200k_bpe() == tmp_path / O200K_CACHE_NAME
    assert load_tokenizer().encode("Hello world") == [13225, 2375]
    monkeypatch.setenv(BPE_ENV_VAR, str(BPE_FILE))
    assert find_o200k_bpe() == BPE_FILE


def test_wrong_bpe_file_is_rejected(tmp_path: Path) -> None:
    bogus = tmp_path / "o200k_base.tiktoken"
    bogus.write_bytes(b"SGVsbG8= 0\n")
    with pytest.raises(ValueError, match="sha256"):
        load_tokenizer(bpe_file=bogus)


def test_load_tokenizer_path_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_tokenizer(tmp_path / "no_such_checkpoint")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(NotADirectoryError):
        load_tokenizer(tmp_path / "file.txt")


@needs_bpe
def test_folder_without_tokenizer_json_uses_phi4_and_its_config(tmp_path: Path) -> None:
    assert load_tokenizer(tmp_path, bpe_file=BPE_FILE).backend == "tiktoken"
    template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    Tokenizer.phi4(BPE_FILE, chat_template=template).save(tmp_path)
    assert not (tmp_path / "tokenizer.json").exists()
    tok = load_tokenizer(tmp_path, bpe_file=BPE_FILE)
    assert tok.backend == "tiktoken" and tok.eos_token_id == 199999
    assert tok.chat_prompt("hi") == "[user] hi\n"



def test_bad_tokenizer_files_are_named_errors(hf_folder: Path, tmp_path: Path) -> None:
    """tokenizer.json that is not JSON, JSON that is not a tokenizer, and a tokenizer_config.json
    that is not JSON: each a TokenizerFileError (a ValueError) naming the file."""
    cases = {"truncated": ("tokenizer.json", (hf_folder / "tokenizer.json").read_text()[:200], "not valid JSON"),
             "list": ("tokenizer.json", "[1, 2]", "not a tokenizer"),
             "config": ("tokenizer_config.json", "{bad", "not valid JSON")}
    for name, (file, text, what) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "tokenizer.json").write_text((hf_folder / "tokenizer.json").read_text())
        (folder / file).write_text(text)
        with pytest.raises(TokenizerFileError, match=what) as info:
            load_tokenizer(folder)
        assert str(folder / file) in str(info.value) and isinstance(info.value, ValueError)


def test_missing_tokenizer_json_is_named_before_the_o200k_fallback(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _no_bpe_anywhere(monkeypatch, tmp_path / "cache")
    folder = tmp_path / "ckpt"
    folder.mkdir()
    with pytest.raises(MissingTokenizerFile) as info:
        load_tokenizer(folder)
    message = str(info.value)
    assert message.startswith(f"{folder / 'tokenizer.json'} is missing")
    assert message.index("is missing") < message.index("o200k_base") and BPE_ENV_VAR in message
    assert isinstance(info.value, ValueError) and isinstance(info.value, FileNotFoundError)

# ----------------------------------------------------------------------------------------
# HF tokenizers backend
# ----------------------------------------------------------------------------------------


def test_hf_saved_files(hf_folder: Path) -> None:
    config = json.loads((hf_folder / "tokenizer_config.json").read_text())
    assert (hf_folder / "tokenizer.json").is_file()
    assert config["chat_template"] == PHI4_CHAT_TEMPLATE
    assert config["eos_token"] == "<|endoftext|>"
    contents = {entry["content"] for entry in config["added_tokens_decoder"].values()}
    assert contents == set(PHI4_SPECIAL_TOKENS)


def test_hf_special_tokens(hf: Tokenizer, hf_folder: Path) -> None:
    assert hf.backend == "hf"
    assert set(hf.special_tokens) == set(PHI4_SPECIAL_TOKENS)
    for token, token_id in hf.special_tokens.items():
        assert hf.token_to_id(token) == token_id
        assert hf.encode(token) == [token_id]
    assert hf.eos_token_id == hf.token_to_id("<|endoftext|>")
    assert hf.end_token_id == hf.token_to_id("<|end|>")
    assert hf.pad_token_id == hf.eos_token_id
    assert hf.stop_token_ids == {hf.eos_token_id, hf.end_token_id}
    raw = tokenizers.Tokenizer.from_file(str(hf_folder / "tokenizer.json"))
    assert hf.vocab_size == raw.get_vocab_size(with_added_tokens=True)


@pytest.mark.parametrize("text", SAMPLES)
def test_hf_round_trip(hf: Tokenizer, text: str) -> None:
    assert hf.decode(hf.encode(text)) == text
    assert hf.decode(hf.encode(text, allow_special=False)) == text


def test_hf_allow_special_false_and_skip_special(hf: Tokenizer) -> None:
    end = hf.token_to_id("<|end|>")
    assert end in hf.encode("x<|end|>y")
    assert end not in hf.encode("x<|end|>y", allow_special=False)
    assert hf.decode(hf.encode("<|user|>1+1<|end|>"), skip_special=True) == "1+1"


def test_hf_chat_prompt_matches_phi_format(hf: Tokenizer, phi4: Tokenizer) -> None:
    assert hf.chat_prompt("What is 7 * 6?") == "<|user|>What is 7 * 6?<|end|><|assistant|>"
    assert hf.chat_prompt("q", system="s") == "<|system|>s<|end|><|user|>q<|end|><|assistant|>"
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]
    for add in (True, False):
        assert hf.apply_chat_template(messages, add) == phi4.apply_chat_template(messages, add)


def test_hf_uses_the_checkpoint_chat_template(hf_folder: Path, tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "tokenizer.json").write_bytes((hf_folder / "tokenizer.json").read_bytes())
    config = json.loads((hf_folder / "tokenizer_config.json").read_text())
    config["chat_template"] = (
        "{{ bos_token }}{% for m in messages %}<<{{ m['role'] | upper }}>>{{ m['content'] }}{% endfor %}"
        "{% if add_generation_prompt %}<<BOT>>{% else %}{{ eos_token }}{% endif %}"
    )
    config["bos_token"] = "<|tag|>"
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    tok = load_tokenizer(folder)
    assert tok.chat_prompt("hi", system="be brief") == "<|tag|><<SYSTEM>>be brief<<USER>>hi<<BOT>>"
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=False) == (
        "<|tag|><<USER>>hi<|endoftext|>"
    )
    assert tok.bos_token_id == tok.token_to_id("<|tag|>")

    # chat_template.jinja, as newer transformers writes it, takes precedence.
    (folder / "chat_template.jinja").write_text("J:{{ messages[0]['content'] }}")
    assert load_tokenizer(folder).chat_prompt("hi") == "J:hi"


def test_hf_padded_vocab_from_config(hf_folder: Path, tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    Tokenizer.from_hf(tokenizers.Tokenizer.from_file(str(hf_folder / "tokenizer.json"))).save(folder)
    (folder / "config.json").write_text(json.dumps({"vocab_size": 512}))
    tok = load_tokenizer(folder)
    assert tok.vocab_size == 512
    assert tok.decode([*tok.encode("1+1"), 450, 511]) == "1+1"
    with pytest.raises(ValueError):
        tok.decode([512])


def test_hf_missing_eos_is_a_clear_error(tmp_path: Path) -> None:
    tok = tokenizers.Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    tok.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(ValueError, match="eos_token"):
        load_tokenizer(tmp_path)


# ----------------------------------------------------------------------------------------
# StreamDecoder
# ----------------------------------------------------------------------------------------


def _stream(tok: Tokenizer, ids: list[int], skip_special: bool = False) -> tuple[list[str], str]:
    decoder = StreamDecoder(tok, skip_special=skip_special)
    deltas = [decoder.feed(i) for i in ids]
    return deltas, decoder.flush()


@pytest.mark.parametrize("backend", ["phi4", "hf"])
@pytest.mark.parametrize("text", SAMPLES)
def test_stream_decoder(request: pytest.FixtureRequest, backend: str, text: str) -> None:
    tok: Tokenizer = request.getfixturevalue(backend)
    ids = tok.encode(text)
    deltas, rest = _stream(tok, ids)
    assert "".join(deltas) + rest == tok.decode(ids) == text
    assert not any("\ufffd" in delta for delta in deltas)
    assert rest == ""

    deltas, rest = _stream(tok, ids, skip_special=True)
    assert "".join(deltas) + rest == tok.decode(ids, skip_special=True)


@pytest.mark.parametrize("backend", ["phi4", "hf"])
def test_stream_decoder_holds_split_characters(request: pytest.FixtureRequest, backend: str) -> None:
    tok: Tokenizer = request.getfixturevalue(backend)
    text = "x𝔸y"  # U+1D538 is 4 UTF-8 bytes, split over several tokens by both tokenizers
    ids = tok.encode(text)
    assert any("\ufffd" in tok.decode([i]) for i in ids)  # some token is a partial character
    deltas, rest = _stream(tok, ids)
    assert "" in deltas  # held back while incomplete
    assert "𝔸" in deltas or "𝔸y" in deltas
    assert "".join(deltas) + rest == text


def test_stream_decoder_incomplete_and_invalid_bytes(phi4: Tokenizer) -> None:
    partial = phi4.encode("𝔸")[:-1]  # a character cut off: decode gives U+FFFD
    deltas, rest = _stream(phi4, [13225, *partial])
    assert deltas[0] == "Hello" and "".join(deltas) == "Hello"
    assert rest == phi4.decode(partial) and "\ufffd" in rest

    # Invalid bytes in the middle of a stream decode as they would in one piece.
    ids = [*partial, 2375, *partial, *partial, 13225]
    deltas, rest = _stream(phi4, ids)
    assert "".join(deltas) + rest == phi4.decode(ids)


def test_stream_decoder_resets_after_flush_and_rejects_bad_ids(phi4: Tokenizer) -> None:
    decoder = StreamDecoder(phi4)
    assert decoder.feed(13225) == "Hello"
    assert decoder.flush() == ""
    assert decoder.feed(2375) == " world"
    with pytest.raises(ValueError):
        decoder.feed(PHI4_VOCAB_SIZE)
    assert decoder.feed(0) == phi4.decode([0])  # the bad id was not kept


def test_default_cache_dir_not_touched(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Loading from an explicit file writes nothing into tiktoken's cache."""
    if not BPE_FILE.is_file():
        pytest.skip(f"o200k_base BPE file not found at {BPE_FILE}")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    copy = tmp_path / "elsewhere" / "o200k.tiktoken"
    copy.parent.mkdir()
    copy.write_bytes(BPE_FILE.read_bytes())
    assert load_tokenizer(bpe_file=copy).encode("Hello world") == [13225, 2375]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere"]
    assert os.listdir(copy.parent) == ["o200k.tiktoken"]
