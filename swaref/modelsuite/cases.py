"""The model-level cases: one tiny checkpoint per architecture and config variant that matters.

A case is data (``ModelCase``): the config.json keys that differ from the
shared tiny ones (``TINY``), the sliding window W its prompts are sized by,
and a seed.  Every supported architecture has a core case; the full suite adds
config variants (other windows and patterns, RoPE scalings).  A new
architecture is one more entry in ``CASES`` (its class name comes from its
row in ``swaref.models.ARCHITECTURES``); what is generated and which wrong
variants apply follow from its config.

Sizes: vocabulary 96 (3 special tokens and 93 one-character tokens, so a
prompt's text spells its token ids), hidden 64, 4 query and 2 key/value heads
of 16, 2 to 4 layers; the prompt is 3W + 5 tokens and the greedy continuation
8 more, so every case has positions past 3W.
"""
from dataclasses import dataclass, field

from ..errors import SwarefError
from ..models.architectures import ARCHITECTURES

SUITES = ("core", "full")
#: Extra tokens past 3W in a prompt, and greedy tokens generated after it.
PROMPT_EXTRA = 5
N_NEW = 8
VOCAB = 96
#: The special tokens (ids 0, 1, 2); ids 3.. are one printable ASCII character each ("!" is 3).
SPECIALS = ("<unk>", "<s>", "</s>")
FIRST_CHAR = 33

#: Judged tolerance: |engine - golden| <= ATOL + RTOL * |golden| for every logit of every position.
ATOL = 1e-3
RTOL = 1e-3
#: Each wrong variant must miss the golden logits by at least this many tolerance units at some
#: position (so an engine with the bug cannot pass), and differ from every other variant by at least
#: SEPARATION units (so that at most one variant can match a result within tolerance).
MIN_MISS = 50.0
SEPARATION = 4.0
#: Each greedy step's best logit must beat the runner-up by this many ATOLs, so that any engine within
#: tolerance picks the same token (a near tie would make the continuation depend on rounding).
GREEDY_MARGIN = 4.0

#: The keys every case shares (transformers' names).
TINY = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
            head_dim=16, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=None, pad_token_id=0,
            tie_word_embeddings=False, max_position_embeddings=256)

S, F = "sliding_attention", "full_attention"


class GeneratorError(SwarefError):
    """A case that would not catch a bug it must catch, or is otherwise unusable (kind "argument")."""

    def __init__(self, message):
        super().__init__("argument", message)


@dataclass(frozen=True)
class ModelCase:
    """One case: id, config.json keys beyond TINY, the window W that sizes its prompt, seed, suites.

    ``window`` is the config's sliding window, or for a model without one (Llama) the window a
    wrong engine would apply to it; ``about`` says in a few words what the case checks.
    """

    id: str
    keys: dict
    window: int
    about: str
    seed: int = 0
    suites: tuple = ("core", "full")
    qk_gain: float = field(default=3.0)   # scale of wq/wk (or of the q/k norm weights): how peaked attention is

    @property
    def model_type(self):
        return self.keys["model_type"]

    @property
    def prompt_len(self):
        return 3 * self.window + PROMPT_EXTRA

    def config_json(self):
        """The case's config.json as a dict (architectures named as a hub checkpoint names them)."""
        return dict(TINY, **self.keys, architectures=[ARCHITECTURES[self.model_type].hf_classes[0]])


def _rope(full, local):
    return {"full_attention": full, "sliding_attention": local}


CASES = (
    ModelCase("mistral", dict(model_type="mistral", num_hidden_layers=3, sliding_window=16), 16,
              "sliding_window on every layer (MistralAttention); llama.cpp's llama arch drops it"),
    ModelCase("ministral", dict(model_type="ministral", num_hidden_layers=3, sliding_window=8, layer_types=[S, F, S]),
              8, "layer_types: sliding, full, sliding"),
    ModelCase("llama", dict(model_type="llama", num_hidden_layers=2, attention_bias=True), 8,
              "no window at all: a window applied to it is the bug (vllm#49795)"),
    ModelCase("qwen2", dict(model_type="qwen2", num_hidden_layers=3, use_sliding_window=True, sliding_window=9,
                            max_window_layers=1), 9,
              "max_window_layers = 1: layer 0 full, layers >= 1 slide (the code, not the docstring)"),
    ModelCase("qwen3", dict(model_type="qwen3", num_hidden_layers=3, use_sliding_window=True, sliding_window=8,
                            layer_types=[S, F, S]), 8, "q/k norms, layer_types"),
    ModelCase("starcoder2", dict(model_type="starcoder2", num_hidden_layers=2, sliding_window=10, use_bias=True), 10,
              "LayerNorm, plain GELU MLP, biases, sliding_window on every layer"),
    ModelCase("phi3", dict(model_type="phi3", num_hidden_layers=2, sliding_window=8, partial_rotary_factor=0.5), 8,
              "fused projections, partial rotary"),
    ModelCase("mixtral", dict(model_type="mixtral", num_hidden_layers=2, sliding_window=12, num_local_experts=4,
                              num_experts_per_tok=2), 12, "mixture of experts, sliding_window on every layer"),
    ModelCase("gemma3", dict(model_type="gemma3_text", num_hidden_layers=3, sliding_window=8, sliding_window_pattern=3,
                             query_pre_attn_scalar=16, hidden_activation="gelu_pytorch_tanh",
                             rope_parameters=_rope({"rope_type": "linear", "factor": 2.0, "rope_theta": 1e6},
                                                   {"rope_type": "default", "rope_theta": 1e4})), 8,
              "2 local : 1 global, local RoPE theta 1e4, global 1e6 with linear scaling"),
    ModelCase("cohere2", dict(model_type="cohere2", num_hidden_layers=4, sliding_window=8, logit_scale=0.25), 8,
              "3 sliding layers with RoPE, 1 global layer without (NoPE), parallel blocks"),
    ModelCase("olmo3", dict(model_type="olmo3", num_hidden_layers=4, sliding_window=10, max_position_embeddings=128,
                            rope_parameters=_rope({"rope_type": "yarn", "factor": 4.0, "rope_theta": 5e5,
                                                   "original_max_position_embeddings": 32},
                                                  {"rope_type": "default", "rope_theta": 5e5})), 10,
              "3 sliding : 1 global, yarn on the global layer only"),
    # The full suite: other windows, patterns and scalings.
    ModelCase("mistral-w5", dict(model_type="mistral", num_hidden_layers=2, sliding_window=5), 5,
              "a small odd window", seed=1, suites=("full",)),
    ModelCase("mistral-layer-types", dict(model_type="mistral", num_hidden_layers=3, sliding_window=7,
                                          layer_types=[F, S, S]), 7,
              "a Mistral config with layer_types (transformers loads it as Ministral)", seed=2, suites=("full",)),
    ModelCase("qwen2-mwl0", dict(model_type="qwen2", num_hidden_layers=2, use_sliding_window=True, sliding_window=6,
                                 max_window_layers=0), 6, "max_window_layers = 0: every layer slides", seed=3,
              suites=("full",)),
    ModelCase("llama-llama3-rope", dict(model_type="llama", num_hidden_layers=2,
                                        rope_parameters={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                         "high_freq_factor": 4.0, "rope_theta": 5e5,
                                                         "original_max_position_embeddings": 16}), 8,
              "llama3 RoPE scaling", seed=4, suites=("full",)),
    ModelCase("gemma3-w11", dict(model_type="gemma3_text", num_hidden_layers=4, sliding_window=11,
                                 sliding_window_pattern=2, query_pre_attn_scalar=16,
                                 hidden_activation="gelu_pytorch_tanh"), 11,
              "1 local : 1 global, default thetas (1e4 local, 1e6 global)", seed=5, suites=("full",)),
)


def cases_of(suite):
    """The cases of a suite, in a fixed order."""
    if suite not in SUITES:
        raise SwarefError("argument", f"suite must be one of {SUITES}, got {suite!r}")
    return [c for c in CASES if suite in c.suites]
