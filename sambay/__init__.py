"""SambaY (Phi-4-mini-flash-reasoning) and the dense Phi-4-mini baseline."""

from .cache import SambaYCache
from .checkpoint import CheckpointError
from .config import ConfigError, SambaYConfig
from .model import CausalLMOutput, SambaYForCausalLM

__all__ = ["CausalLMOutput", "CheckpointError", "ConfigError", "SambaYCache", "SambaYConfig", "SambaYForCausalLM"]
