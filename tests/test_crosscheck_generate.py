"""swaref's generate layer against Hugging Face transformers (the `crosscheck` extra):

* the sampling distribution (temperature, top-k, top-p, min-p) against transformers' own
  logits processors, applied in the order its ``generate`` applies them, on random logits;
* chat templates rendered (and tokenized) by swaref.models.text against
  ``PreTrainedTokenizerFast.apply_chat_template`` on the same saved tokenizer directory.

Without torch/transformers these tests skip with the reason, unless
SWAREF_REQUIRE_CROSSCHECK=1 (CI) makes a missing extra fail.
"""
import json
import os

import numpy as np
import pytest

pytestmark = pytest.mark.crosscheck

REQUIRED = os.environ.get("SWAREF_REQUIRE_CROSSCHECK") == "1"
try:
    import jinja2  # noqa: F401  (apply_chat_template needs it too; the crosscheck extra lists it)
    import torch
    from transformers import PreTrainedTokenizerFast
    from transformers.generation.logits_process import (LogitsProcessorList, MinPLogitsWarper,
                                                        TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)
except ImportError as e:  # pragma: no cover - depends on the environment
    if REQUIRED:
        raise ImportError(f"SWAREF_REQUIRE_CROSSCHECK=1 but the crosscheck extra is missing ({e}); "
                          f"pip install 'swaref[crosscheck]'") from e
    pytest.skip(f"the crosscheck extra (torch, transformers, jinja2) is not installed: {e}", allow_module_level=True)

from swaref.models import sampling as S  # noqa: E402
from swaref.models import text as X  # noqa: E402
from crosscheck_helpers import scale_up_weights  # noqa: E402


def transformers_probs(logits, temperature, top_k, top_p, min_p):
    """The distribution transformers' generate samples from: its warpers in its order (generation/utils.py
    ``_get_logits_processor``: temperature, top-k, top-p, min-p), then softmax."""
    procs = LogitsProcessorList()
    if temperature != 1.0:
        procs.append(TemperatureLogitsWarper(temperature))
    if top_k != 0:
        procs.append(TopKLogitsWarper(top_k=top_k, min_tokens_to_keep=1))
    if top_p < 1.0:
        procs.append(TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1))
    if min_p > 0:
        procs.append(MinPLogitsWarper(min_p=min_p, min_tokens_to_keep=1))
    scores = procs(torch.zeros((1, 1), dtype=torch.long), torch.tensor(logits, dtype=torch.float64)[None])
    return torch.softmax(scores, dim=-1)[0].numpy()


def test_sampling_distribution_equals_transformers_processors_on_random_logits():
    rng = np.random.default_rng(0)
    for trial in range(400):
        V = int(rng.integers(2, 60))
        logits = rng.standard_normal(V) * rng.choice([0.5, 3.0, 10.0])
        T = float(rng.choice([1.0, rng.uniform(0.2, 3.0)]))
        k = int(rng.choice([0, rng.integers(1, V + 1)]))
        p = float(rng.choice([1.0, rng.uniform(0.05, 1.0)]))
        m = float(rng.choice([0.0, rng.uniform(0.0, 0.9)]))
        want = transformers_probs(logits, T, k, p, m)
        got = S.distribution(logits, T, top_p=p, top_k=k, min_p=m)
        assert ((got > 0) == (want > 0)).all(), (trial, V, T, k, p, m)
        assert np.abs(got - want).max() < 1e-12, (trial, V, T, k, p, m)


def test_top_k_and_min_p_ties_equal_transformers():
    rng = np.random.default_rng(1)
    for trial in range(200):
        V = int(rng.integers(2, 30))
        logits = rng.integers(-3, 4, V).astype(np.float64)       # many ties
        k = int(rng.integers(1, V + 1))
        m = float(rng.choice([0.0, rng.uniform(0, 1)]))   # (a ratio exactly min_p is decided by rounding)
        want = transformers_probs(logits, 1.0, k, 1.0, m)
        got = S.distribution(logits, 1.0, top_k=k, min_p=m)
        assert ((got > 0) == (want > 0)).all() and np.abs(got - want).max() < 1e-12, (trial, logits, k, m)


# ------------------------------------------------------------------ chat templates

MISTRAL_LIKE = (
    "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] %}"
    "{%- set loop_messages = messages[1:] %}{%- else %}{%- set loop_messages = messages %}{%- endif %}\n"
    "{{- bos_token }}\n"
    "{%- for message in loop_messages %}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n"
    "        {{- raise_exception('After the optional system message, conversation roles must alternate "
    "user/assistant/user/assistant/...') }}\n"
    "    {%- endif %}\n"
    "    {%- if message['role'] == 'user' %}\n"
    "        {%- if loop.last and system_message is defined %}\n"
    "            {{- '[INST] ' + system_message + '\\n\\n' + message['content'] + '[/INST]' }}\n"
    "        {%- else %}\n"
    "            {{- '[INST] ' + message['content'] + '[/INST]' }}\n"
    "        {%- endif %}\n"
    "    {%- elif message['role'] == 'assistant' %}\n"
    "        {{- ' ' + message['content']|trim + eos_token}}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n")

CHATML = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
          "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
          "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

# trim_blocks / lstrip_blocks matter here (plain {% %} tags on their own indented lines), plus namespace,
# tojson, loop controls and a {% generation %} block.
BLOCKY = """{{ bos_token }}
{% set ns = namespace(turns=0) %}
{% for m in messages %}
    {% if m['role'] == 'system' %}
<<SYS>>{{ m['content'] | tojson }}<</SYS>>
    {% else %}
        {% set ns.turns = ns.turns + 1 %}
        {% if m['role'] == 'assistant' %}
{% generation %}{{ m['content'] }}{{ eos_token }}{% endgeneration %}
        {% else %}
[{{ m['role'] }} {{ ns.turns }}] {{ m['content'] }}
        {% endif %}
    {% endif %}
    {% if ns.turns > 8 %}{% break %}{% endif %}
{% endfor %}
{% if add_generation_prompt %}[assistant]{% endif %}"""

CHATS = [
    [{"role": "user", "content": "Hello there"}],
    [{"role": "system", "content": "Be brief & \"exact\" <ok>."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "  Hello!  "}, {"role": "user", "content": "Tell me about 東京 🙂"}],
]


def save_tokenizer(d, template, as_file):
    """A byte-level BPE saved the way transformers saves one, with bos/eos and the template either in
    chat_template.jinja (save_pretrained in transformers 5) or in tokenizer_config.json."""
    from test_models_text import byte_bpe
    tok = byte_bpe()
    tok.add_special_tokens(["<s>", "</s>", "<|im_start|>", "<|im_end|>"])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    fast.chat_template = template
    fast.save_pretrained(d)
    cfg_path = os.path.join(d, "tokenizer_config.json")
    jinja_path = os.path.join(d, "chat_template.jinja")
    if not as_file:
        if os.path.exists(jinja_path):
            os.remove(jinja_path)
        with open(cfg_path) as f:
            cfg = json.load(f)
        cfg["chat_template"] = template
        with open(cfg_path, "w") as f:
            json.dump(cfg, f)
    else:
        assert os.path.exists(jinja_path)
    return d


@pytest.mark.parametrize("as_file", [True, False], ids=["chat_template.jinja", "tokenizer_config.json"])
@pytest.mark.parametrize("template", [MISTRAL_LIKE, CHATML, BLOCKY], ids=["mistral", "chatml", "blocks"])
def test_chat_template_rendering_equals_transformers_apply_chat_template(tmp_path, template, as_file):
    from transformers import AutoTokenizer
    d = save_tokenizer(str(tmp_path), template, as_file)
    hf = AutoTokenizer.from_pretrained(d)
    ours = X.read_chat_template(d)
    assert ours == hf.get_chat_template()
    special = X.read_special_tokens(d)
    tok = X.load_hf_tokenizer(d)
    for chat in CHATS:
        for gen in (True, False):
            want = hf.apply_chat_template(chat, tokenize=False, add_generation_prompt=gen)
            got = X.render_chat(ours, chat, add_generation_prompt=gen, special_tokens=special)
            assert got == want, (chat, gen)
            want_ids = hf.apply_chat_template(chat, tokenize=True, add_generation_prompt=gen, return_dict=False)
            if isinstance(want_ids, dict) or hasattr(want_ids, "keys"):
                want_ids = want_ids["input_ids"]
            assert tok.encode(got, add_special_tokens=False) == list(want_ids), (chat, gen)


def test_a_template_refusing_the_messages_is_refused_by_both(tmp_path):
    from transformers import AutoTokenizer
    d = save_tokenizer(str(tmp_path), MISTRAL_LIKE, True)
    bad = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    with pytest.raises(Exception, match="must alternate"):
        AutoTokenizer.from_pretrained(d).apply_chat_template(bad, tokenize=False)
    with pytest.raises(X.SwarefError, match="must alternate") as e:
        X.render_chat(X.read_chat_template(d), bad, special_tokens=X.read_special_tokens(d))
    assert e.value.kind == "argument"


# ------------------------------------------------------------------ text generation end to end

def hf_checkpoint(d, template=CHATML):
    """A random transformers MistralForCausalLM (weights redrawn so that attention is peaked) and a
    byte-level BPE tokenizer with a chat template, saved together with save_pretrained."""
    from test_models_text import byte_bpe
    from transformers import MistralConfig, MistralForCausalLM
    tok = byte_bpe()
    tok.add_special_tokens(["<s>", "</s>", "<|im_start|>", "<|im_end|>"])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    fast.chat_template = template
    cfg = MistralConfig(vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, sliding_window=4, rope_theta=10000.0,
                        rms_norm_eps=1e-5, max_position_embeddings=512, bos_token_id=tok.token_to_id("<s>"),
                        eos_token_id=None, tie_word_embeddings=False)
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    model = MistralForCausalLM(cfg).eval()
    scale_up_weights(model, 0)
    model.save_pretrained(d)
    fast.save_pretrained(d)
    return model, fast


def test_text_generation_chat_and_logprobs_equal_transformers(tmp_path):
    import swaref
    d = str(tmp_path)
    hf, hf_tok = hf_checkpoint(d)
    tm = swaref.load_model(d)
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "héllo wörld 🙂"}]
    want_prompt = hf_tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert tm.prompt_ids(chat[1]["content"], chat=True, system=chat[0]["content"]) == list(want_prompt)
    n = 16
    # greedy: the same tokens as transformers' generate, and the same text as its tokenizer decodes
    (c,), _ = tm.complete([chat[1]["content"]], chat=True, system=chat[0]["content"], max_new_tokens=n,
                          temperature=0, stop_on_eos=False)
    with torch.no_grad():
        out = hf.generate(torch.tensor([want_prompt]), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                          pad_token_id=0)
    theirs = out[0, len(want_prompt):].tolist()
    assert c.tokens == theirs
    assert c.text == hf_tok.decode(theirs, skip_special_tokens=True)
    # sampled: each log-probability is the chosen token's under transformers' warped distribution
    # (temperature, top-k, top-p, min-p) of transformers' own logits for the same sequence
    T, k, p, m = 0.8, 20, 0.9, 0.05
    (c,), _ = tm.complete([want_prompt], max_new_tokens=n, temperature=T, top_k=k, top_p=p, min_p=m, seed=3,
                          stop_on_eos=False)
    seq = list(want_prompt) + c.tokens
    with torch.no_grad():
        logits = hf(torch.tensor([seq])).logits[0, len(want_prompt) - 1:-1].double()
    procs = LogitsProcessorList([TemperatureLogitsWarper(T), TopKLogitsWarper(k), TopPLogitsWarper(p),
                                 MinPLogitsWarper(m)])
    for i, tok in enumerate(c.tokens):
        lp = torch.log_softmax(procs(torch.tensor([seq[:len(want_prompt) + i]]), logits[i:i + 1]), dim=-1)[0]
        assert np.isfinite(float(lp[tok])) and abs(float(lp[tok]) - c.logprobs[i]) < 1e-4, (i, float(lp[tok]),
                                                                                            c.logprobs[i])
