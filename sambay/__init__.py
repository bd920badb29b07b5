"""SambaY (Phi-4-mini-flash-reasoning) and the dense Phi-4-mini baseline."""

from .auto import load_model
from .cache import DenseCache, SambaYCache
from .causal_lm import CausalLMOutput
from .checkpoint import CheckpointError
from .config import ConfigError, Phi4MiniConfig, SambaYConfig
from .model import SambaYForCausalLM
from .phi4mini import Phi4MiniForCausalLM

__all__ = ["CausalLMOutput", "CheckpointError", "ConfigError", "DenseCache", "Phi4MiniConfig", "Phi4MiniForCausalLM",
           "SambaYCache", "SambaYConfig", "SambaYForCausalLM", "load_model"]
