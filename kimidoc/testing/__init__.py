"""Test fixtures in the official formats: tiny checkpoints and the tokenizer.

``write_checkpoint(dir)`` yields a complete model folder (config, shards, index, tokenizer) that
:func:`kimidoc.model.load` reads through the same code path as the real checkpoint.
"""

from kimidoc.testing.checkpoint import (
    QUANTIZATION_CONFIG,
    read_tensors,
    tiny_text_config,
    write_checkpoint,
    write_dequantized_copy,
)
from kimidoc.testing.tokenizer import write_tokenizer

__all__ = [
    "QUANTIZATION_CONFIG",
    "read_tensors",
    "tiny_text_config",
    "write_checkpoint",
    "write_dequantized_copy",
    "write_tokenizer",
]
