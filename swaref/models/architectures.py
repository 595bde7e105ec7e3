"""What differs between model architectures and checkpoint formats, declared as data in one place.

The forward pass (``swaref.models.generation``) is one path for every
architecture; what changes from one family to the next is read from here:

* ``ARCHITECTURES``: the families swaref loads, by the names Hugging Face
  configs give them, and what each one's config means.  Today Mistral and
  Llama, which share one graph; they differ in whether ``sliding_window``
  applies (Llama has no window).
* ``FORMATS``: the two checkpoint layouts, Hugging Face's (``config.json``,
  RoPE "half") and Mistral's native one (``params.json``, RoPE
  "interleaved"): which file field holds which ``ModelConfig`` field, their
  defaults, and where the layers' tensors live.  The tensor names themselves
  are declared once, beside their shapes, on ``weights.LayerWeights`` and
  ``weights.Model``.

A new architecture gets a row in ``ARCHITECTURES``; a feature the graph does
not have yet (QK-norm, biases, logit soft-capping, ...) becomes a field of
``Architecture`` and of ``ModelConfig``, read by the one forward pass.  The
per-layer window list (``ModelConfig.windows``: an int W or None for full
attention, per layer) already covers interleaved local/global layers.
"""
from dataclasses import dataclass, field

#: RoPE layouts.  "half" (Hugging Face's rotate_half): element i pairs with
#: i + D/2.  "interleaved" (Mistral's original view_as_complex): 2i pairs with 2i+1.
ROPE_LAYOUTS = ("half", "interleaved")


@dataclass(frozen=True)
class Architecture:
    """One model family: the names its configs use and what its config fields mean."""

    name: str                  # swaref's name, also Hugging Face's model_type
    hf_classes: tuple          # config "architectures" entries that name it
    sliding_window: bool       # whether the config's sliding_window / layer_types apply
    hidden_act: str = "silu"   # the MLP's activation (SwiGLU's gate)


ARCHITECTURES = {
    "mistral": Architecture("mistral", ("MistralForCausalLM",), sliding_window=True),
    # Llama is Mistral's graph without a window: a sliding_window in its config is ignored.
    "llama": Architecture("llama", ("LlamaForCausalLM",), sliding_window=False),
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

HF = CheckpointFormat(
    name="hf", config_file="config.json",
    fields=dict(zip(_COMMON, ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                              "num_attention_heads", "num_key_value_heads", "head_dim", "sliding_window",
                              "rope_theta", "rms_norm_eps")),
                tie_word_embeddings="tie_word_embeddings", bos_token_id="bos_token_id",
                eos_token_ids="eos_token_id"),
    required=("vocab_size", "hidden_size", "intermediate_size", "n_layers", "n_heads"),
    # transformers' MistralConfig defaults.
    defaults={"rope_theta": 10000.0, "rms_norm_eps": 1e-6},
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
