"""swaref.models.text: incremental decoding, stop strings, chat templates (sandboxed), the text-level
API ``swaref.load_model(DIR).generate("text")``.

Expected values are written out by hand, or come from an independent path
(``swaref.models.generate`` on token ids, a tokenizer's one-shot decode).
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from model_helpers import backend_missing, make_model, needs_safetensors, write_checkpoint

from swaref import models as M
from swaref.errors import SwarefError
from swaref.models import chat as CH
from swaref.models import text as X

try:
    import tokenizers
except ImportError:  # pragma: no cover - the test extra installs it
    tokenizers = None
try:
    import jinja2
except ImportError:  # pragma: no cover - the test extra should install it (pip install swaref[chat])
    jinja2 = None
needs_tokenizers = pytest.mark.skipif(tokenizers is None, reason="needs the 'tokenizers' package (pip install swaref[test])")
needs_jinja2 = pytest.mark.skipif(jinja2 is None, reason="needs jinja2 (pip install swaref[chat])")

TEXTS = ["héllo wörld 日本語 🙂 the cat is on a chair", "Ünïcödé façade — naïve café 🙂🙂 東京", "plain ascii text"]


def byte_bpe():
    """A byte-level BPE (GPT-2 / Llama 3 style) whose tokens often hold part of a character."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXTS * 5, trainers.BpeTrainer(vocab_size=300,
                                                           initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def metaspace_bpe():
    """A SentencePiece-style tokenizer (Mistral / Llama 2): '▁' for spaces, the first one dropped on decode."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(TEXTS * 5, trainers.BpeTrainer(vocab_size=200))
    return tok


def byte_fallback():
    """Llama 2's layout: characters, '<0xNN>' byte tokens for anything else, and the decoder sequence
    Replace('▁', ' '), ByteFallback, Fuse, Strip(1 leading space)."""
    from tokenizers import Tokenizer, decoders, models, normalizers
    vocab = {"<unk>": 0}
    vocab.update({f"<0x{b:02X}>": 1 + b for b in range(256)})
    for c in ["▁"] + sorted(set("".join(TEXTS[2:]) + "héllo wörld the cat is on a chair") - {" "}):
        vocab.setdefault(c, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    return tok


def word_level(n=61):
    words = [f"w{i}" for i in range(n)]
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="w0"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.decoder = tokenizers.decoders.WordPiece()  # joins tokens with spaces
    return tok, words


# ------------------------------------------------------------------ incremental decoding

@needs_tokenizers
@pytest.mark.parametrize("make", [byte_bpe, metaspace_bpe, byte_fallback])
def test_incremental_pieces_join_to_the_one_shot_decode(make):
    tok = make()
    hf = X.HFTokenizer(tok)
    for text in TEXTS + [" ".join(TEXTS)]:
        ids = tok.encode(text).ids
        dec = hf.incremental()
        pieces = [dec.step(i) for i in ids] + [dec.flush()]
        assert "".join(pieces) == tok.decode(ids), (text, pieces)
        assert not any("\ufffd" in p for p in pieces)      # half characters are held back, not shown
    if make is byte_fallback:
        # Random byte tokens are mostly invalid UTF-8, and how ByteFallback groups invalid bytes into
        # U+FFFD depends on the bytes decoded together: only valid text is held to the one-shot decode.
        return
    rng = np.random.default_rng(0)                          # random ids: whatever they decode to
    for _ in range(20):
        ids = rng.integers(0, tok.get_vocab_size(), 40).tolist()
        dec = hf.incremental()
        assert "".join([dec.step(i) for i in ids] + [dec.flush()]) == tok.decode(ids)


@needs_tokenizers
def test_incremental_decoding_costs_a_bounded_number_of_tokens_per_step():
    tok = byte_bpe()
    ids = tok.encode(" ".join(TEXTS * 20)).ids
    decoded = [0]

    def counting(x):
        decoded[0] += len(x)
        return tok.decode(x)

    dec = X.IncrementalDecoder(counting)
    out = "".join([dec.step(i) for i in ids] + [dec.flush()])
    assert out == tok.decode(ids)
    # Re-decoding everything so far would cost n(n+1)/2 token decodes (about 10**5 here).
    assert decoded[0] <= 4 * X.MAX_PENDING_TOKENS * len(ids), (decoded[0], len(ids))
    # Tokens that decode to nothing (special tokens, skipped) do not grow the window either.
    tok.add_special_tokens(["<pad>"])
    pad = tok.token_to_id("<pad>")
    ids = ids[:50] + [pad] * 2000 + ids[50:100]
    decoded[0] = 0
    dec = X.IncrementalDecoder(counting)
    assert "".join([dec.step(i) for i in ids] + [dec.flush()]) == tok.decode(ids)
    assert decoded[0] <= 10 * X.MAX_PENDING_TOKENS * len(ids), (decoded[0], len(ids))


def test_word_and_id_tokenizers():
    w = X.WordTokenizer()
    ids = w.encode("The cat is on a chair")
    assert ids == [0, 1, 2, 3, 4, 5] and w.decode(ids) == "The cat is on a chair"
    dec = w.incremental()
    assert [dec.step(i) for i in [12, 13]] == ["richest", " man"]
    with pytest.raises(SwarefError, match="'dog' is not in --tiny's vocabulary"):
        w.encode("The dog")
    assert X.IdTokenizer().encode("1 415, 2936") == [1, 415, 2936]
    with pytest.raises(SwarefError, match="no tokenizer.json"):
        X.IdTokenizer().encode("hello")
    with pytest.raises(SwarefError, match=">= 0"):
        X.parse_ids("1 -2")


# ------------------------------------------------------------------ stop strings

def test_stop_matcher_holds_back_a_possible_stop_and_cuts_before_it():
    m = X.StopMatcher(["\n\n", "END"])
    assert m.push("a\n") == ("a", False)            # "\n" may start "\n\n": held back
    assert m.push("b E") == ("\nb ", False)         # it did not; "E" may start "END"
    assert m.push("N") == ("", False)
    assert m.push("Dx") == ("", True) and m.matched == "END"
    assert m.push("more") == ("", True)
    m = X.StopMatcher(["ab", "b"])                  # the earliest match wins
    assert m.push("xab") == ("x", True) and m.matched == "ab"
    m = X.StopMatcher(["stop"])
    assert m.push("no st") == ("no ", False) and m.flush() == "st"
    assert X.StopMatcher().push("anything") == ("anything", False)
    for bad, match in [([""], "non-empty"), ([1], "non-empty"), (3, "string or a list")]:
        with pytest.raises(SwarefError, match=match):
            X.StopMatcher(bad)


def test_on_token_returning_true_ends_that_sequence_only():
    model = make_model(seed=2)
    prompts = [[5, 17, 3], [9, 1, 44, 2]]
    full = M.generate(model, prompts, max_new_tokens=8, stop_on_eos=False).tokens
    seen = []

    def on_token(b, tok):
        seen.append((b, tok))
        return b == 0 and sum(1 for s in seen if s[0] == 0) == 3

    res = M.generate(model, prompts, max_new_tokens=8, stop_on_eos=False, on_token=on_token)
    assert res.tokens == [full[0][:3], full[1]] and res.finished_by_eos == [False, False]


def test_stop_strings_end_generation_and_are_not_in_the_text():
    tm = X.tiny_model(seed=4)
    ids = M.generate(tm.model, [tm.encode(X.TUTORIAL_WORDS[0])], max_new_tokens=12, stop_on_eos=False).tokens[0]
    words = [X.TUTORIAL_WORDS[i] for i in ids]
    k = 5
    stop = f"{words[k - 1][-1:]} {words[k]}"               # spans two tokens' text
    first = next(j for j in range(1, len(words)) if f"{words[j - 1][-1:]} {words[j]}" == stop)
    (c,), res = tm.complete([X.TUTORIAL_WORDS[0]], max_new_tokens=12, stop=[stop], stop_on_eos=False)
    assert c.finish_reason == "stop" and c.stop == stop
    assert c.tokens == ids[:first + 1] and res.tokens[0] == ids[:first + 1]
    assert c.text == " ".join(words[:first + 1])[:-len(stop)]
    assert len(c.logprobs) == len(c.tokens)
    (c,), _ = tm.complete([X.TUTORIAL_WORDS[0]], max_new_tokens=12, stop=["no such text"])
    assert c.finish_reason == "length" and c.text == " ".join(words) and c.stop is None


# ------------------------------------------------------------------ chat templates

SIMPLE = ("{{ bos_token }}{% for m in messages %}\n"
          "  {% if m['role'] == 'user' %}[U] {{ m['content'] }}\n"
          "  {% elif m['role'] == 'system' %}[S] {{ m['content'] }}\n"
          "  {% else %}[A] {{ m['content'] }}{{ eos_token }}\n"
          "  {% endif %}\n"
          "{% endfor %}\n"
          "{% if add_generation_prompt %}[A]{% endif %}")


@needs_jinja2
def test_a_chat_template_renders_with_trim_and_lstrip_blocks_and_special_tokens():
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye", "name": None}]
    got = X.render_chat(SIMPLE, msgs, special_tokens={"bos_token": "<s>", "eos_token": "</s>"})
    # By hand: trim_blocks eats the newline after each block tag, lstrip_blocks the indentation before it.
    assert got == "<s>[S] Be brief.\n[U] Hi\n[A] Hello</s>\n[U] Bye\n[A]"
    assert X.render_chat(SIMPLE, msgs[1:2], add_generation_prompt=False, special_tokens={"bos_token": "<s>"}) \
        == "<s>[U] Hi\n"


@needs_jinja2
def test_chat_template_helpers_match_transformers_environment():
    msgs = [{"role": "user", "content": "<b>&'"}]
    t = ("{{ messages[0]['content'] | tojson }}|{% generation %}G{% endgeneration %}|"
         "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% if true %}{% break %}"
         "{% endif %}{% endfor %}{{ ns.n }}|{{ dict(a=1)['a'] }}|{{ strftime_now('%Y') | length }}")
    assert X.render_chat(t, msgs) == "\"<b>&'\"|G|1|1|4"


@needs_jinja2
@pytest.mark.parametrize("template,kind,match", [
    ("{{ raise_exception('roles must alternate') }}", "argument", "roles must alternate"),
    ("{{ ''.__class__.__mro__ }}", "checkpoint", "sandbox"),
    ("{{ messages.append(1) }}", "checkpoint", "sandbox"),                 # immutable: no mutation of inputs
    ("{% set ns = namespace(_x=1) %}", "checkpoint", "sandbox"),
    ("{% include 'secret.txt' %}", "checkpoint", "failed"),               # no loader: no file access
    ("{{ cycler.__init__.__globals__ }}", "checkpoint", "sandbox"),
    ("{{ 1 / 0 }}", "checkpoint", "ZeroDivisionError"),
    ("{% for %}", "format", "not valid Jinja"),
])
def test_an_untrusted_template_is_sandboxed_and_its_failures_are_rejections(template, kind, match):
    with pytest.raises(SwarefError, match=match) as e:
        X.render_chat(template, [{"role": "user", "content": "x"}])
    assert e.value.kind == kind


def test_missing_jinja2_is_a_dependency_error_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "jinja2", None)
    monkeypatch.setattr(CH, "_ENV", {})
    with pytest.raises(SwarefError, match=r"swaref\[chat\]") as e:
        X.render_chat(SIMPLE, [{"role": "user", "content": "x"}])
    assert e.value.kind == "dependency"


@needs_jinja2
@pytest.mark.parametrize("bad", [[], "hi", [{"content": "x"}], [{"role": "user"}], [{"role": "user", "content": {1}}]])
def test_bad_messages_are_refused(bad):
    with pytest.raises(SwarefError, match="messages"):
        X.render_chat(SIMPLE, bad)


def test_reading_the_template_and_special_tokens_as_transformers_does(tmp_path):
    d = str(tmp_path)
    assert X.read_chat_template(d) is None and X.read_special_tokens(d) == {}
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}],
                   "bos_token": "<s>", "eos_token": {"content": "</s>", "lstrip": False}, "pad_token": None}, f)
    with open(os.path.join(d, "special_tokens_map.json"), "w") as f:
        json.dump({"unk_token": "<unk>", "bos_token": "<ignored>"}, f)
    assert X.read_chat_template(d) == "D"
    assert X.read_special_tokens(d) == {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    with open(os.path.join(d, "chat_template.jinja"), "w") as f:
        f.write("J")
    assert X.read_chat_template(d) == "J"                  # the .jinja file wins
    os.remove(os.path.join(d, "chat_template.jinja"))
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"chat_template": [{"name": "tool_use", "template": "T"}]}, f)
    with pytest.raises(SwarefError, match="'default'"):
        X.read_chat_template(d)


# ------------------------------------------------------------------ the text-level API

@pytest.fixture
def checkpoint(tmp_path):
    model = make_model(seed=6)
    d = write_checkpoint(str(tmp_path), model)
    tok, words = word_level()
    tok.save(os.path.join(d, "tokenizer.json"))
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"chat_template": "{% for m in messages %}{{ m['content'] }} {% endfor %}"
                                    "{% if add_generation_prompt %}{{ eos_token }}{% endif %}",
                   "eos_token": "w2"}, f)
    return d, model, words


@needs_safetensors
@needs_tokenizers
@needs_jinja2
def test_load_model_generates_text_equal_to_the_token_level(checkpoint):
    import swaref
    d, model, words = checkpoint
    tm = swaref.load_model(d)
    assert isinstance(tm, X.TextModel) and tm.chat_template is not None
    want = M.generate(model, [[5, 17, 3, 44, 9]], max_new_tokens=7, stop_on_eos=False).tokens[0]
    assert tm.generate("w5 w17 w3 w44 w9", max_new_tokens=7, stop_on_eos=False) == " ".join(words[t] for t in want)
    other = M.generate(model, [[8, 8]], max_new_tokens=4, stop_on_eos=False).tokens[0]
    assert tm.generate(["w5 w17 w3 w44 w9", "w8 w8"], max_new_tokens=4, stop_on_eos=False) == \
        [" ".join(words[t] for t in want[:4]), " ".join(words[t] for t in other)]
    assert tm.generate_ids([[5, 17, 3, 44, 9]], max_new_tokens=7, stop_on_eos=False).tokens[0] == want
    # chat: the template's text, encoded without the tokenizer's special tokens (as transformers does)
    assert tm.prompt_ids("w7", chat=True, system="w4") == [4, 7, 2]
    (c,), _ = tm.complete(["w7"], chat=True, system="w4", max_new_tokens=3, stop_on_eos=False)
    assert c.prompt_tokens == [4, 7, 2]
    assert c.tokens == M.generate(model, [[4, 7, 2]], max_new_tokens=3, stop_on_eos=False).tokens[0]
    assert tm.prompt_ids([{"role": "user", "content": "w1"}, {"role": "user", "content": "w3"}], chat=True) \
        == [1, 3, 2]
    with pytest.raises(SwarefError, match="system needs chat"):
        tm.generate("w1", system="w2")
    with pytest.raises(SwarefError, match="prompt must be a string"):
        tm.generate(5)
    with pytest.raises(SwarefError, match="top_k"):
        tm.generate("w1", top_k=-1)


def test_generate_defaults_to_the_compiled_backend_where_it_is_built(monkeypatch):
    want = "reference" if backend_missing() else "cython"
    assert X.default_backend() == want
    seen = []
    real = M.generation.generate

    def spy(*a, **kw):
        seen.append(kw["backend"])
        return real(*a, **kw)

    monkeypatch.setattr(M.generation, "generate", spy)
    X.tiny_model().generate("The cat", max_new_tokens=2)
    X.tiny_model().generate("The cat", max_new_tokens=2, backend="reference")
    assert seen == [want, "reference"]


def test_importing_swaref_imports_no_tokenizer_and_load_model_is_exported():
    code = ("import sys, swaref; assert 'tokenizers' not in sys.modules and 'jinja2' not in sys.modules; "
            "from swaref.models.text import load_model; assert swaref.load_model is load_model; "
            "assert 'load_model' in swaref.__all__; print('ok')")
    import swaref                                          # the same swaref as this test run (source tree or installed)
    root = os.path.dirname(os.path.dirname(os.path.abspath(swaref.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_streamed_pieces_join_to_each_completions_text_and_never_show_a_stop_string():
    tm = X.tiny_model(seed=1)
    prompts = ["The cat is", "who is the richest"]
    full = tm.complete(prompts, max_new_tokens=10)[0]
    stop = full[0].text.split()[4]                        # a word of the first completion
    pieces = {0: [], 1: []}
    done, _ = tm.complete(prompts, max_new_tokens=10, stop=stop, on_text=lambda b, t: pieces[b].append(t))
    for b, c in enumerate(done):
        assert "".join(pieces[b]) == c.text and stop not in c.text
        if c.finish_reason == "stop":
            assert full[b].text.startswith(c.text) and full[b].text[len(c.text):].startswith(stop)
        else:
            assert c.text == full[b].text and stop not in full[b].text
    assert done[0].finish_reason == "stop"


def test_load_model_refuses_a_missing_directory_and_a_non_path():
    import pathlib
    import swaref
    with pytest.raises(SwarefError, match="does not exist"):
        swaref.load_model(pathlib.Path("/nonexistent/swaref-model"))
    with pytest.raises(SwarefError, match="directory must be a path"):
        swaref.load_model(3)


def test_sampling_options_left_out_take_the_checkpoints_generation_defaults(monkeypatch):
    """transformers' generate with no arguments samples when generation_config.json sets do_sample
    (config.sampling: do_sample, temperature, top_p, top_k), and is greedy otherwise."""
    tm = X.tiny_model()
    assert tm.sampling_params() == M.SamplingParams(0.0, 1.0, None, 0, 0.0)          # no generation config
    defaults = {"do_sample": True, "temperature": 0.6, "top_p": 0.9, "top_k": 50}
    monkeypatch.setattr(M.ModelConfig, "sampling", property(lambda self: dict(defaults)), raising=False)
    assert tm.sampling_params(seed=3) == M.SamplingParams(0.6, 0.9, 3, 50, 0.0)
    assert tm.sampling_params(temperature=0, top_k=5, min_p=0.1) == M.SamplingParams(0.0, 0.9, None, 5, 0.1)
    got = tm.complete(["The cat"], max_new_tokens=6, seed=3)[0][0].tokens
    want = M.generate(tm.model, [[0, 1]], max_new_tokens=6,
                      sample=M.make_sampler(M.SamplingParams(0.6, 0.9, 3, top_k=50))).tokens[0]
    assert got == want
    defaults["do_sample"] = False                                                    # greedy, the rest unused
    assert tm.sampling_params(top_k=7) == M.SamplingParams(0.0, 1.0, None, 7, 0.0)
