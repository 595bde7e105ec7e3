"""Models: decoder-only transformers run on CPU with swaref's attention and caches (float32).

One module per job:

* ``architectures``: what differs between model families and checkpoint formats, as data;
  a new architecture starts here;
* ``config``: ``ModelConfig``, the hyper-parameters, validated in one place;
* ``weights``: ``LayerWeights`` and ``Model``, each tensor declared once with its shape
  and its name in each checkpoint format;
* ``rope``, ``layers``: the math of one layer (RoPE, RMSNorm, attention block, SwiGLU MLP);
* ``generation``: per-layer caches, the forward pass, chunked prefill, batched generation;
* ``sampling``: greedy, temperature, top-k, top-p, min-p;
* ``hfconfig``: a config.json (and generation_config.json) read as transformers reads it;
* ``checkpoint``: reading Hugging Face and Mistral-native checkpoint directories;
* ``text``: tokenizers, incremental decoding, stop strings, ``load_model(DIR)`` -> ``TextModel``;
* ``chat``: chat templates, rendered as transformers renders them, in jinja2's sandbox;
* ``cli``: ``swaref generate``.

docs/model.md explains every choice and how this matches Hugging Face transformers.
"""
from .architectures import ARCHITECTURES, FORMATS, ROPE_LAYOUTS
from .checkpoint import CheckpointError, CheckpointFileError, load_model, load_tokenizer
from .config import ModelConfig
from .generation import (GenerationResult, cache_nbytes, forward, forward_packed, generate, new_caches,
                         prefill_prompt)
from .sampling import SamplingParams, make_sampler
from .weights import LAYER_TENSORS, LayerWeights, Model, random_model

__all__ = [
    "ARCHITECTURES", "FORMATS", "ROPE_LAYOUTS", "CheckpointError", "CheckpointFileError", "load_model",
    "load_tokenizer", "ModelConfig", "GenerationResult", "cache_nbytes", "forward", "forward_packed", "generate",
    "new_caches", "prefill_prompt", "SamplingParams", "make_sampler", "LAYER_TENSORS", "LayerWeights", "Model",
    "random_model",
]
