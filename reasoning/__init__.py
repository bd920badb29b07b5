"""Long chain-of-thought reasoning with SambaY / Phi-4-mini models: load a checkpoint, solve
math problems, check boxed answers, evaluate.

    from reasoning import load, solve
    result = solve("What is 347 * 28?")            # the built-in default model
    print(result.text, result.answer, result.stats)

Modules: ``api`` (these functions), ``engine`` (the generation loop over text),
``evaluation`` (JSONL problem sets, pass@1, maj@k), ``answers`` (answer extraction and
checking), ``tokenizer`` (tokenizers and chat prompts), ``cli`` (the ``sambay`` command),
``curriculum`` (synthetic arithmetic problems), ``small_tokenizer`` and ``builtin_training``
(the built-in model's tokenizer and training recipe).
"""

from .answers import answers_match, extract_boxed, majority_vote, split_reasoning
from .api import engine_for, evaluate, generate, load, solve, solve_many, stream
from .engine import DEFAULT_MODEL_DIR, ReasoningEngine, Result, Stats, TextStream
from .evaluation import Evaluation, Problem, read_problems
from .tokenizer import Tokenizer, load_tokenizer

__all__ = ["DEFAULT_MODEL_DIR", "Evaluation", "Problem", "ReasoningEngine", "Result", "Stats", "TextStream",
           "Tokenizer", "answers_match", "engine_for", "evaluate", "extract_boxed", "generate", "load",
           "load_tokenizer", "majority_vote", "read_problems", "solve", "solve_many", "split_reasoning", "stream"]
