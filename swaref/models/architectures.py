"""What differs between model architectures and checkpoint formats, declared as data in one place.

The forward pass (``swaref.models.generation``) is one path for every
architecture; what changes from one family to the next is read from here:

* ``ARCHITECTURES``: the families swaref loads, by the ``model_type`` and
  class names Hugging Face configs give them, and what each one's config
  means: the default of every config.json key it reads (transformers 5.24.0's
  ``configuration_<type>.py`` class defaults: a key the file omits means what
  transformers' config class makes of it), the rule that turns
  ``sliding_window`` / ``use_sliding_window`` / ``max_window_layers`` /
  ``layer_types`` into per-layer windows (``WINDOW_RULES``, read from each
  ``modeling_<type>.py``), which projections carry biases, and whether q and k
  are RMS-normalised per head.
* ``FORMATS``: the two checkpoint layouts, Hugging Face's (``config.json``,
  RoPE "half") and Mistral's native one (``params.json``, RoPE
  "interleaved"): which file field holds which ``ModelConfig`` field, their
  defaults, and where the layers' tensors live.  The tensor names themselves
  are declared once, beside their shapes, on ``weights.LayerWeights`` and
  ``weights.Model``.

A new architecture gets a row in ``ARCHITECTURES``; a feature the graph does
not have yet becomes a field of ``Architecture`` and of ``ModelConfig``, read
by the one forward pass.  ``hfconfig`` turns a config.json into a
``ModelConfig`` from these rows.
"""
from dataclasses import dataclass, field

#: RoPE layouts.  "half" (Hugging Face's rotate_half): element i pairs with
#: i + D/2.  "interleaved" (Mistral's original view_as_complex): 2i pairs with 2i+1.
ROPE_LAYOUTS = ("half", "interleaved")

#: How an architecture's config gives per-layer windows (transformers 5.24.0, modeling_<type>.py):
#: "none": no layer slides (Llama ignores sliding_window);
#: "every_layer": sliding_window (null: none) on every layer; use_sliding_window and layer_types are
#:   not read (MistralAttention passes config.sliding_window to every layer);
#: "layer_types": layer i slides iff layer_types[i] == "sliding_attention"; without layer_types every
#:   layer slides when sliding_window is set (MinistralConfig.__post_init__);
#: "max_window_layers": sliding_window counts only when use_sliding_window is true; without layer_types,
#:   layer i slides iff i >= max_window_layers (Qwen2Config / Qwen3Config.__post_init__; the docstring
#:   says the opposite, transformers#35896: swaref follows the code).
WINDOW_RULES = ("none", "every_layer", "layer_types", "max_window_layers")

#: The projections that can carry a bias (weights.LayerWeights field names).
BIASED = ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down")


@dataclass(frozen=True)
class Architecture:
    """One model family: the names its configs use and what its config keys mean."""

    name: str                  # swaref's name, also Hugging Face's model_type
    hf_classes: tuple          # config "architectures" entries that name it
    defaults: dict             # config.json key -> transformers' config-class default
    windows: str               # one of WINDOW_RULES
    hidden_act: str = "silu"   # the MLP's activation (SwiGLU's gate)
    biases: tuple = ()         # projections that always have a bias
    bias_keys: dict = field(default_factory=dict)  # config key -> projections biased when it is true
    qk_norm: str = ""          # "head": q and k RMS-normalised over each head's D before RoPE
    # AutoModelForCausalLM loads this model_type as another one when the config has layer_types
    # (transformers 5.24.0 models/auto/configuration_auto.py: mistral + layer_types -> ministral).
    with_layer_types: str = None
    # Keys without which transformers cannot build the model (refused, naming the key).
    required: tuple = ()
    # Tensor names that differ from weights.LayerWeights' defaults ({tensor: name within a layer}; top-level
    # tensors by their full name), and file tensors that hold several of swaref's along axis 0.
    names: dict = field(default_factory=dict)
    fused: dict = field(default_factory=dict)
    norm_plus_one: bool = False  # RMSNorm weights stored as w - 1 (Gemma: x * (1 + w))


# transformers 5.24.0 models/mistral/configuration_mistral.py (MistralConfig); head_dim None means
# hidden_size // num_attention_heads, num_key_value_heads None means num_attention_heads (no GQA).
_MISTRAL = dict(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                num_attention_heads=32, num_key_value_heads=8, head_dim=None, hidden_act="silu", rms_norm_eps=1e-6,
                bos_token_id=1, eos_token_id=2, tie_word_embeddings=False, rope_theta=10000.0, sliding_window=4096,
                max_position_embeddings=4096 * 32)
# models/llama/configuration_llama.py (LlamaConfig): no window; num_key_value_heads None (no GQA).
_LLAMA = dict(_MISTRAL, intermediate_size=11008, num_key_value_heads=None, sliding_window=None,
              attention_bias=False, mlp_bias=False, max_position_embeddings=2048)
# models/qwen2/configuration_qwen2.py (Qwen2Config); Qwen2Attention reads head_dim with getattr, so a
# missing head_dim is hidden_size // num_attention_heads.
_QWEN2 = dict(vocab_size=151936, hidden_size=4096, intermediate_size=22016, num_hidden_layers=32,
              num_attention_heads=32, num_key_value_heads=32, head_dim=None, hidden_act="silu", rms_norm_eps=1e-6,
              bos_token_id=None, eos_token_id=None, tie_word_embeddings=False, rope_theta=10000.0,
              use_sliding_window=False, sliding_window=4096, max_window_layers=28, layer_types=None,
              max_position_embeddings=32768)
# models/qwen3/configuration_qwen3.py (Qwen3Config): head_dim is 128 when omitted.
_QWEN3 = dict(_QWEN2, head_dim=128, attention_bias=False)

ARCHITECTURES = {
    "mistral": Architecture("mistral", ("MistralForCausalLM",), _MISTRAL, "every_layer",
                            with_layer_types="ministral"),
    # models/ministral/configuration_ministral.py (MinistralConfig): MistralConfig's defaults + layer_types.
    # MinistralAttention reads head_dim with getattr and the class default is None, and MinistralModel
    # always builds the sliding mask (a ValueError without sliding_window): transformers cannot run a
    # Ministral config without head_dim or with sliding_window null.
    "ministral": Architecture("ministral", ("MinistralForCausalLM",), dict(_MISTRAL, layer_types=None),
                              "layer_types", required=("head_dim", "sliding_window")),
    # Llama is Mistral's graph without a window: a sliding_window in its config is ignored.
    "llama": Architecture("llama", ("LlamaForCausalLM",), _LLAMA, "none",
                          bias_keys={"attention_bias": ("wq", "wk", "wv", "wo"),
                                     "mlp_bias": ("w_gate", "w_up", "w_down")}),
    # Qwen2Attention: q/k/v projections always have a bias, o_proj never.
    "qwen2": Architecture("qwen2", ("Qwen2ForCausalLM",), _QWEN2, "max_window_layers", biases=("wq", "wk", "wv")),
    # Qwen3Attention: q_norm / k_norm (RMSNorm over head_dim, before RoPE); attention_bias biases q/k/v/o.
    "qwen3": Architecture("qwen3", ("Qwen3ForCausalLM",), _QWEN3, "max_window_layers", qk_norm="head",
                          bias_keys={"attention_bias": ("wq", "wk", "wv", "wo")}),
}


@dataclass(frozen=True)
class CheckpointFormat:
    """A checkpoint layout: its config file, field names, defaults, RoPE layout and tensor prefix."""

    name: str                  # the key of the tensor names on weights.LayerWeights / weights.Model
    config_file: str
    fields: dict               # ModelConfig field -> the config file's name for it
    required: tuple            # ModelConfig fields the file must give
    defaults: dict = field(default_factory=dict)  # ModelConfig field -> value when the file omits it
    rope_layout: str = "half"
    layer_prefix: str = ""     # tensor name of layer i's weight X: f"{layer_prefix}{i}.{X}"
    ignored: str = "(?!)"      # regular expression of tensor names that are skipped (recomputed)


_COMMON = ("vocab_size", "hidden_size", "intermediate_size", "n_layers", "n_heads", "n_kv_heads", "head_dim",
           "windows", "rope_theta", "rms_norm_eps")

# A config.json's defaults come from its architecture's row (ARCHITECTURES[...].defaults), not from here.
HF = CheckpointFormat(
    name="hf", config_file="config.json",
    fields=dict(zip(_COMMON, ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                              "num_attention_heads", "num_key_value_heads", "head_dim", "sliding_window",
                              "rope_theta", "rms_norm_eps")),
                tie_word_embeddings="tie_word_embeddings", bos_token_id="bos_token_id",
                eos_token_ids="eos_token_id"),
    required=(),
    rope_layout="half", layer_prefix="model.layers.",
    # Old checkpoints store RoPE's inverse frequencies; swaref recomputes them.
    ignored=r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq")

MISTRAL_NATIVE = CheckpointFormat(
    name="mistral", config_file="params.json",
    fields=dict(zip(_COMMON, ("vocab_size", "dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "head_dim",
                              "sliding_window", "rope_theta", "norm_eps"))),
    required=("vocab_size", "hidden_size", "intermediate_size", "n_layers", "n_heads"),
    # 1e-5 is what Mistral 7B's params.json states; rope_theta has no safe default (see checkpoint.py).
    defaults={"rms_norm_eps": 1e-5},
    rope_layout="interleaved", layer_prefix="layers.")

FORMATS = {f.name: f for f in (HF, MISTRAL_NATIVE)}
