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

#: The projections that can carry a bias (weights.LayerWeights field names); the last four are a
#: mixture of experts' (gpt-oss: the router and every expert's projections).
BIASED = ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down", "router", "experts_gate", "experts_up", "experts_down")
MOE_BIASED = BIASED[-4:]


#: config.json activation names -> swaref's (layers.ACTIVATIONS); any other is refused by name.
ACTIVATIONS = {"silu": "silu", "gelu_pytorch_tanh": "gelu_tanh"}


@dataclass(frozen=True)
class Packed:
    """One file tensor that holds several of swaref's (``parts``, weights.LayerWeights names), joined
    along the file tensor's ``axis``: "rows" one after another (Phi-3's qkv_proj, gate first in
    gate_up_proj), "interleaved" part j every len(parts)-th entry from j (gpt-oss's gate_up_proj:
    gate = [..., 0::2], up = [..., 1::2]).  transposed: the file stores each part's last two axes
    swapped, [..., in, out] (gpt-oss's experts), where swaref holds [..., out, in].
    """

    parts: tuple
    how: str = "rows"
    axis: int = 0
    transposed: bool = False


@dataclass(frozen=True)
class Architecture:
    """One model family: the names its configs use and what its config keys mean."""

    name: str                  # swaref's name, also Hugging Face's model_type
    hf_classes: tuple          # config "architectures" entries that name it
    defaults: dict             # config.json key -> transformers' config-class default
    windows: str               # one of WINDOW_RULES
    # The layer graph: ModelConfig fields fixed by the family (norm, norms, parallel, mlp, qk_norm,
    # nope_full, rope_layout); what is not given is ModelConfig's default (Mistral's graph).
    graph: dict = field(default_factory=dict)
    # ModelConfig field -> config.json key, where the family's key differs from Mistral's
    # (rms_norm_eps: "norm_epsilon"; act: "hidden_activation"; n_experts: "num_local_experts"; ...).
    keys: dict = field(default_factory=dict)
    biases: tuple = ()         # projections that always have a bias
    bias_keys: dict = field(default_factory=dict)  # config key -> projections biased when it is true
    # AutoModelForCausalLM loads this model_type as another one when the config has layer_types
    # (transformers 5.24.0 models/auto/configuration_auto.py: mistral + layer_types -> ministral).
    with_layer_types: str = None
    # Keys without which transformers cannot run the model (refused, naming the key).
    required: tuple = ()
    # Keys transformers' code for this family never reads (Cohere2Config.__post_init__ overwrites head_dim).
    ignored: tuple = ()
    # Keys that change the computation in a way swaref does not implement: key -> the accepted values.
    unsupported: dict = field(default_factory=dict)
    # Without layer_types, layer i is full attention iff (i + 1) % n == 0; n from the key when given.
    full_every: int = None
    full_every_key: str = None
    partial_rotary: bool = False        # partial_rotary_factor rotates the first dims of each head
    # Per-layer-type RoPE (rope_parameters nested by layer type): full layers' default theta, the
    # legacy key of the sliding layers' theta and its default (transformers' convert_rope_params_to_dict).
    rope_by_layer_type: tuple = None
    embed_scale_sqrt: bool = False      # embeddings multiplied by sqrt(hidden_size) (Gemma)
    attn_scale_key: str = None          # attention scale: this key ** -0.5 instead of head_dim ** -0.5
    # Tensor names that differ from weights.LayerWeights' defaults ({tensor: name within a layer}; top-level
    # tensors by their full name), and file tensors that hold several of swaref's ({name: Packed}).
    names: dict = field(default_factory=dict)
    fused: dict = field(default_factory=dict)
    norm_plus_one: bool = False  # RMSNorm weights stored as w - 1 (Gemma: x * (1 + w))
    # Other names of a key (transformers' attribute_map: gpt-oss's num_experts is num_local_experts).
    aliases: dict = field(default_factory=dict)


# Each family's defaults: transformers 5.24.0 models/<type>/configuration_<type>.py, the class defaults.
# MistralConfig: head_dim None means hidden_size // num_attention_heads, num_key_value_heads None means
# num_attention_heads (no GQA).
_MISTRAL = dict(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                num_attention_heads=32, num_key_value_heads=8, head_dim=None, hidden_act="silu", rms_norm_eps=1e-6,
                bos_token_id=1, eos_token_id=2, tie_word_embeddings=False, rope_theta=10000.0, sliding_window=4096,
                max_position_embeddings=4096 * 32)
# LlamaConfig: no window; num_key_value_heads None (no GQA).
_LLAMA = dict(_MISTRAL, intermediate_size=11008, num_key_value_heads=None, sliding_window=None,
              attention_bias=False, mlp_bias=False, max_position_embeddings=2048)
# Qwen2Config; Qwen2Attention reads head_dim with getattr, so a missing head_dim is hidden // heads.
_QWEN2 = dict(vocab_size=151936, hidden_size=4096, intermediate_size=22016, num_hidden_layers=32,
              num_attention_heads=32, num_key_value_heads=32, head_dim=None, hidden_act="silu", rms_norm_eps=1e-6,
              bos_token_id=None, eos_token_id=None, tie_word_embeddings=False, rope_theta=10000.0,
              use_sliding_window=False, sliding_window=4096, max_window_layers=28, layer_types=None,
              max_position_embeddings=32768)
# Qwen3Config: head_dim is 128 when omitted.
_QWEN3 = dict(_QWEN2, head_dim=128, attention_bias=False)
_STARCODER2 = dict(vocab_size=49152, hidden_size=3072, intermediate_size=12288, num_hidden_layers=30,
                   num_attention_heads=24, num_key_value_heads=2, head_dim=None, hidden_act="gelu_pytorch_tanh",
                   norm_epsilon=1e-5, bos_token_id=50256, eos_token_id=50256, tie_word_embeddings=True,
                   rope_theta=10000.0, sliding_window=None, use_bias=True, max_position_embeddings=4096)
_PHI3 = dict(vocab_size=32064, hidden_size=3072, intermediate_size=8192, num_hidden_layers=32, num_attention_heads=32,
             num_key_value_heads=None, head_dim=None, hidden_act="silu", rms_norm_eps=1e-5, bos_token_id=1,
             eos_token_id=32000, tie_word_embeddings=False, rope_theta=10000.0, sliding_window=None,
             max_position_embeddings=4096, partial_rotary_factor=1.0)
# MixtralConfig: default_theta 1e6.
_MIXTRAL = dict(_MISTRAL, rms_norm_eps=1e-5, rope_theta=1e6, sliding_window=None, num_local_experts=8,
                num_experts_per_tok=2)
# Gemma3TextConfig: default_theta {"global": 1e6, "local": 1e4}; every 6th layer global.
_GEMMA3 = dict(vocab_size=262208, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
               num_attention_heads=8, num_key_value_heads=4, head_dim=256, hidden_activation="gelu_pytorch_tanh",
               rms_norm_eps=1e-6, bos_token_id=2, eos_token_id=1, tie_word_embeddings=True, rope_theta=1e6,
               attention_bias=False, query_pre_attn_scalar=256, sliding_window=4096, layer_types=None,
               sliding_window_pattern=6, max_position_embeddings=131072, final_logit_softcapping=None,
               attn_logit_softcapping=None)
# Cohere2Config: head_dim always hidden // heads; every 4th layer global.
_COHERE2 = dict(vocab_size=256000, hidden_size=8192, intermediate_size=22528, logit_scale=0.0625,
                num_hidden_layers=40, num_attention_heads=64, num_key_value_heads=None, hidden_act="silu",
                layer_norm_eps=1e-5, bos_token_id=5, eos_token_id=255001, tie_word_embeddings=True,
                rope_theta=10000.0, attention_bias=False, sliding_window=4096, layer_types=None,
                sliding_window_pattern=4, max_position_embeddings=8192)
# Olmo3Config: default_theta 5e5; every 4th layer global.
_OLMO3 = dict(vocab_size=50304, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
              num_attention_heads=32, num_key_value_heads=None, head_dim=None, hidden_act="silu", bos_token_id=None,
              eos_token_id=50279, tie_word_embeddings=False, rope_theta=5e5, attention_bias=False,
              rms_norm_eps=1e-5, sliding_window=4096, layer_types=None, max_position_embeddings=2048)
# Gemma2Config: Gemma 3's sizes with plain RoPE (default_theta 1e4, one theta for every layer), every
# 2nd layer global, both soft-caps on by default.
_GEMMA2 = {**{k: v for k, v in _GEMMA3.items() if k != "sliding_window_pattern"},
           **dict(vocab_size=256000, rope_theta=1e4, max_position_embeddings=8192, final_logit_softcapping=30.0,
                  attn_logit_softcapping=50.0, use_bidirectional_attention=None)}
# GptOssConfig: default_theta 1.5e5 under the yarn rope_parameters __post_init__ fills in; every 2nd layer
# global.  hidden_act is never read (the experts' clamped SwiGLU is fixed; ignored below).
_GPT_OSS = dict(vocab_size=201088, hidden_size=2880, intermediate_size=2880, num_hidden_layers=36,
                num_attention_heads=64, num_key_value_heads=8, head_dim=64, hidden_act="silu", rms_norm_eps=1e-5,
                bos_token_id=None, eos_token_id=None, tie_word_embeddings=False, rope_theta=1.5e5,
                rope_parameters={"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
                                 "truncate": False, "original_max_position_embeddings": 4096},
                attention_bias=True, sliding_window=128, layer_types=None, num_local_experts=128,
                num_experts_per_tok=4, swiglu_alpha=1.702, swiglu_limit=7.0, max_position_embeddings=131072)
_QKVO = ("wq", "wk", "wv", "wo")
# The Gemma graph (Gemma 2 and Gemma 3 text): norms before and after attention and MLP, (1 + w) RMSNorms,
# GeGLU, embeddings x sqrt(d), scale query_pre_attn_scalar ** -0.5, attention and final-logit soft-caps.
_GEMMA = dict(graph={"norms": ("attn", "attn_out", "mlp", "mlp_out")},
              keys={"act": "hidden_activation", "attn_softcap": "attn_logit_softcapping",
                    "final_softcap": "final_logit_softcapping"},
              bias_keys={"attention_bias": _QKVO}, required=("sliding_window",),
              unsupported={"use_bidirectional_attention": (False, None)}, embed_scale_sqrt=True,
              attn_scale_key="query_pre_attn_scalar", norm_plus_one=True,
              names={"attn_out_norm": "post_attention_layernorm.weight", "mlp_norm": "pre_feedforward_layernorm.weight"})

ARCHITECTURES = {
    "mistral": Architecture("mistral", ("MistralForCausalLM",), _MISTRAL, "every_layer",
                            with_layer_types="ministral"),
    # MinistralAttention reads head_dim with getattr and the class default is None, and MinistralModel
    # always builds the sliding mask (a ValueError without sliding_window): transformers cannot run a
    # Ministral config without head_dim or with sliding_window null.
    "ministral": Architecture("ministral", ("MinistralForCausalLM",), dict(_MISTRAL, layer_types=None),
                              "layer_types", required=("head_dim", "sliding_window")),
    # Llama is Mistral's graph without a window: a sliding_window in its config is ignored.
    "llama": Architecture("llama", ("LlamaForCausalLM",), _LLAMA, "none",
                          bias_keys={"attention_bias": _QKVO, "mlp_bias": ("w_gate", "w_up", "w_down")}),
    # Qwen2Attention: q/k/v projections always have a bias, o_proj never.
    "qwen2": Architecture("qwen2", ("Qwen2ForCausalLM",), _QWEN2, "max_window_layers", biases=_QKVO[:3]),
    # Qwen3Attention: q_norm / k_norm (RMSNorm over head_dim, before RoPE); attention_bias biases q/k/v/o.
    "qwen3": Architecture("qwen3", ("Qwen3ForCausalLM",), _QWEN3, "max_window_layers", graph={"qk_norm": "head"},
                          bias_keys={"attention_bias": _QKVO}),
    # Starcoder2: LayerNorm (always with bias), a plain c_fc -> GELU(tanh) -> c_proj MLP, use_bias on every
    # projection, sliding_window on every layer.
    "starcoder2": Architecture(
        "starcoder2", ("Starcoder2ForCausalLM",), _STARCODER2, "every_layer",
        graph={"norm": "layer", "mlp": "plain"}, keys={"rms_norm_eps": "norm_epsilon"},
        bias_keys={"use_bias": (*_QKVO, "w_up", "w_down")},
        names={"w_up": "mlp.c_fc.weight", "b_up": "mlp.c_fc.bias", "w_down": "mlp.c_proj.weight",
               "b_down": "mlp.c_proj.bias"}),
    # Phi-3: fused qkv_proj and gate_up_proj (gate first), partial rotary, sliding_window on every layer.
    "phi3": Architecture("phi3", ("Phi3ForCausalLM",), _PHI3, "every_layer", partial_rotary=True,
                         fused={"self_attn.qkv_proj.weight": Packed(("wq", "wk", "wv")),
                                "mlp.gate_up_proj.weight": Packed(("w_gate", "w_up"))}),
    # Mixtral: Mistral's attention (sliding_window on every layer) and a top-k mixture of SwiGLU experts.
    "mixtral": Architecture("mixtral", ("MixtralForCausalLM",), _MIXTRAL, "every_layer", graph={"mlp": "moe"},
                            keys={"n_experts": "num_local_experts", "top_k": "num_experts_per_tok"}),
    # Gemma 2: the Gemma graph (above) with one RoPE for every layer, 1 local : 1 global.
    "gemma2": Architecture("gemma2", ("Gemma2ForCausalLM",), _GEMMA2, "layer_types", full_every=2, **_GEMMA),
    # Gemma 3 (text): the Gemma graph plus per-head q/k norms and RoPE per layer type, 5 local : 1 global.
    # Gemma3Attention keeps attn_logit_softcapping but never passes it to the attention function
    # (transformers 5.24.0): the key is ignored, as there; final_logit_softcapping is applied.
    "gemma3_text": Architecture(
        "gemma3_text", ("Gemma3ForCausalLM",), _GEMMA3, "layer_types",
        **dict(_GEMMA, graph=dict(_GEMMA["graph"], qk_norm="head"),
               keys={k: v for k, v in _GEMMA["keys"].items() if k != "attn_softcap"},
               ignored=("attn_logit_softcapping",)),
        full_every=6, full_every_key="sliding_window_pattern", rope_by_layer_type=(1e6, "rope_local_base_freq", 1e4)),
    # Cohere 2: one bias-free LayerNorm feeding attention and MLP in parallel, interleaved RoPE on sliding
    # layers only (Cohere2Attention skips it on full ones), logits x logit_scale.
    "cohere2": Architecture(
        "cohere2", ("Cohere2ForCausalLM",), _COHERE2, "layer_types",
        graph={"norm": "layer_nobias", "norms": ("attn",), "parallel": True, "nope_full": True,
               "rope_layout": "interleaved"},
        keys={"rms_norm_eps": "layer_norm_eps", "logit_scale": "logit_scale"}, bias_keys={"attention_bias": _QKVO},
        required=("sliding_window",), ignored=("head_dim",), full_every=4, full_every_key="sliding_window_pattern"),
    # OLMo 3: norms after attention and after the MLP only, q/k RMSNorm over the whole projection, RoPE per
    # layer type (yarn on full-attention layers only; a top-level rope_theta reaches the full layers only).
    "olmo3": Architecture(
        "olmo3", ("Olmo3ForCausalLM",), _OLMO3, "layer_types", graph={"norms": ("attn_out", "mlp_out"),
                                                                      "qk_norm": "all"},
        bias_keys={"attention_bias": _QKVO}, required=("sliding_window",), full_every=4,
        rope_by_layer_type=(5e5, None, 5e5),
        names={"attn_out_norm": "post_attention_layernorm.weight",
               "mlp_out_norm": "post_feedforward_layernorm.weight"}),
    # gpt-oss: a learned sink logit per query head, 1 sliding : 1 full layer, yarn, biases on q/k/v/o
    # (attention_bias), a top-k mixture of experts with a biased router (softmax over the top-k logits)
    # and biased experts whose SwiGLU is clamped (GptOssExperts._apply_gate), gate and up interleaved
    # in one transposed gate_up_proj.  MXFP4-quantized checkpoints are refused (quantization_config).
    "gpt_oss": Architecture(
        "gpt_oss", ("GptOssForCausalLM",), _GPT_OSS, "layer_types", graph={"mlp": "moe", "sinks": True},
        keys={"n_experts": "num_local_experts", "top_k": "num_experts_per_tok", "glu_alpha": "swiglu_alpha",
              "glu_limit": "swiglu_limit"},
        biases=MOE_BIASED, bias_keys={"attention_bias": _QKVO}, aliases={"num_experts": "num_local_experts"},
        required=("sliding_window", "swiglu_alpha", "swiglu_limit"), ignored=("hidden_act",), full_every=2,
        names={"router": "mlp.router.weight", "b_router": "mlp.router.bias"},
        fused={"mlp.experts.gate_up_proj": Packed(("experts_gate", "experts_up"), "interleaved", -1, transposed=True),
               "mlp.experts.gate_up_proj_bias": Packed(("b_experts_gate", "b_experts_up"), "interleaved", -1),
               "mlp.experts.down_proj": Packed(("experts_down",), transposed=True),
               "mlp.experts.down_proj_bias": Packed(("b_experts_down",))}),
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
