"""swaref.models.cli: ``swaref generate`` end to end (--tiny, a written checkpoint with a tokenizer and a
chat template, every prompt source, --json, stop strings, errors).

What the command prints is compared with ``swaref.models.generate`` run on token ids (and, for
log-probabilities, a log-softmax computed here from swaref's logits).
"""
import io
import json
import os

import numpy as np
import pytest

from model_helpers import backend_missing, make_model, needs_safetensors, write_checkpoint

from swaref import models as M
from swaref.cli import main
from swaref.models.text import TUTORIAL_WORDS

try:
    import tokenizers
except ImportError:  # pragma: no cover - the test extra installs it
    tokenizers = None
needs_tokenizers = pytest.mark.skipif(tokenizers is None, reason="needs 'tokenizers' (pip install swaref[test])")
try:
    import jinja2
except ImportError:  # pragma: no cover
    jinja2 = None
needs_jinja2 = pytest.mark.skipif(jinja2 is None, reason="needs jinja2 (pip install swaref[chat])")


class Tty(io.StringIO):
    def isatty(self):
        return True


def run_cli(argv, stdin=None, err=None):
    """main()'s parsing, then run() with our own streams -> (rc, stdout, stderr)."""
    import argparse
    from swaref.models import cli
    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    out, err = io.StringIO(), err if err is not None else io.StringIO()
    rc = cli.run(p.parse_args(argv), out=out, err=err, stdin=stdin if stdin is not None else io.StringIO())
    return rc, out.getvalue(), err.getvalue()


def tiny_tokens(prompt_words, n, seed=0, **kw):
    from swaref.models.text import tiny_model
    tm = tiny_model(seed)
    return M.generate(tm.model, [[TUTORIAL_WORDS.index(w) for w in prompt_words.split()]], max_new_tokens=n,
                      **kw).tokens[0]


# ------------------------------------------------------------------ --tiny

def test_generate_cli_tiny_prints_tutorial_words_and_says_noise(capsys):
    rc = main(["generate", "--tiny", "--prompt", "The cat is on a chair", "--max-new-tokens", "6", "--seed", "1"])
    out = capsys.readouterr()
    assert rc == 0
    assert out.out.split() == [TUTORIAL_WORDS[t] for t in tiny_tokens("The cat is on a chair", 6, seed=1)]
    assert "noise" in out.err and "prefill" in out.err and "decode" in out.err and "cache" in out.err


def test_generate_cli_tiny_defaults_to_the_tutorial_prompt_and_model_needs_one(tmp_path):
    rc, out, err = run_cli(["--tiny", "--max-new-tokens", "2"])
    assert rc == 0 and "1 prompt of 11 tokens" in err     # one word = one token
    rc, out, err = run_cli(["--model", str(tmp_path)])
    assert rc == 2 and "--model needs a prompt" in err
    rc, out, err = run_cli(["--tiny", "--prompt", "The dog"])
    assert rc == 2 and "'dog' is not in --tiny's vocabulary" in err


def test_generate_cli_backend_defaults_to_compiled_where_built_and_reference_on_request():
    want = "reference" if backend_missing() else "cython"
    assert f"backend {want}, greedy\n" in run_cli(["--tiny", "--max-new-tokens", "1"])[2]
    assert "backend reference, greedy\n" in run_cli(["--tiny", "--max-new-tokens", "1", "--backend", "reference"])[2]
    a = run_cli(["--tiny", "--max-new-tokens", "6", "--backend", "reference"])[1]
    assert a == run_cli(["--tiny", "--max-new-tokens", "6"])[1]


def test_generate_cli_progress_bar_only_on_a_terminal():
    argv = ["--tiny", "--prompt", " ".join(TUTORIAL_WORDS * 3), "--max-new-tokens", "2", "--chunk-size", "8"]
    err = Tty()
    assert run_cli(argv, err=err)[0] == 0
    assert "prefill [" in err.getvalue() and "48/48 tokens" in err.getvalue()
    rc, _, err = run_cli(argv)
    assert rc == 0 and "prefill [" not in err


def test_generate_cli_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for s in ["--max-new-tokens N tokens to generate per prompt, at most (default: 64)",
              "--temperature T 0 = greedy (default: the checkpoint's generation_config.json when it sets do_sample, "
              "else 0, greedy, as transformers' generate)", "0 = off (default: the checkpoint's",
              "1 = off (default: the checkpoint's", "(0 = off); temperature, top-k, top-p and min-p apply in that "
              "order, as in transformers (default: 0.0)", "(None: cython where it is built",
              "under the distribution it was drawn from"]:
        assert s in text, s


def test_generate_cli_sampling_defaults_come_from_the_checkpoint(monkeypatch):
    defaults = {"do_sample": True, "temperature": 0.6, "top_p": 0.9, "top_k": 50}
    monkeypatch.setattr(M.ModelConfig, "sampling", property(lambda self: dict(defaults)), raising=False)
    err = run_cli(["--tiny", "--max-new-tokens", "1"])[2]
    assert "sampling with temperature 0.6, top-k 50, top-p 0.9, min-p 0\n" in err
    err = run_cli(["--tiny", "--max-new-tokens", "1", "--top-k", "3", "--min-p", "0.2"])[2]
    assert "sampling with temperature 0.6, top-k 3, top-p 0.9, min-p 0.2\n" in err
    assert ", greedy\n" in run_cli(["--tiny", "--max-new-tokens", "1", "--temperature", "0"])[2]


# ------------------------------------------------------------------ prompt sources

def test_generate_cli_prompt_file_stdin_and_implicit_stdin(tmp_path):
    want = tiny_tokens("The cat is", 5)
    f = tmp_path / "p.txt"
    f.write_text("The cat is\n")
    assert run_cli(["--tiny", "--prompt-file", str(f), "--max-new-tokens", "5"])[1].split() == \
        [TUTORIAL_WORDS[t] for t in want]
    assert run_cli(["--tiny", "--prompt-file", "-", "--max-new-tokens", "5"],
                   stdin=io.StringIO("The cat is\n"))[1].split() == [TUTORIAL_WORDS[t] for t in want]
    with open(f) as piped:                                 # --tiny never reads standard input unasked
        assert "1 prompt of 11 tokens" in run_cli(["--tiny", "--max-new-tokens", "1"], stdin=piped)[2]
    rc, _, err = run_cli(["--tiny", "--prompt-file", str(tmp_path / "none.txt")])
    assert rc == 2 and "--prompt-file" in err and "none.txt" in err
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe")
    rc, _, err = run_cli(["--tiny", "--prompt-file", str(tmp_path / "bad.txt")])
    assert rc == 2 and "not UTF-8" in err


def test_generate_cli_batch_file_equals_each_prompt_alone(tmp_path):
    f = tmp_path / "batch.txt"
    f.write_text("The cat is\n\nwho is the richest\r\nman\n")
    rc, out, err = run_cli(["--tiny", "--batch-file", str(f), "--max-new-tokens", "4"])
    assert rc == 0 and "3 prompts of 1/3/4 tokens" in err
    lines = out.split("\n")
    assert lines[3] == "" and len(lines) == 4
    for line, p in zip(lines, ["The cat is", "who is the richest", "man"]):
        assert line.split() == [TUTORIAL_WORDS[t] for t in tiny_tokens(p, 4)]
    rc, out, _ = run_cli(["--tiny", "--batch-file", str(f), "--max-new-tokens", "4", "--json"])
    docs = [json.loads(x) for x in out.splitlines()]
    assert [d["index"] for d in docs] == [0, 1, 2] and docs[1]["prompt"] == "who is the richest"
    assert docs[1]["tokens"] == tiny_tokens("who is the richest", 4)
    (tmp_path / "empty.txt").write_text("\n  \n")
    rc, _, err = run_cli(["--tiny", "--batch-file", str(tmp_path / "empty.txt")])
    assert rc == 2 and "--batch-file" in err and "no prompt" in err


# ------------------------------------------------------------------ --json, sampling, stop strings

def log_softmax_at(model, prompt, new):
    """log softmax of swaref's logits for each new token, computed here (float64)."""
    caches = M.new_caches(model, len(prompt) + len(new))
    logits = M.prefill_prompt(model, prompt + new, caches, logits="all").astype(np.float64)[len(prompt) - 1:-1]
    z = logits - logits.max(axis=1, keepdims=True)
    lsm = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return [float(lsm[i, t]) for i, t in enumerate(new)]


def test_generate_cli_json_has_ids_and_log_probabilities():
    from swaref.models.text import tiny_model
    model = tiny_model(0).model
    prompt = [0, 1, 2]
    rc, out, _ = run_cli(["--tiny", "--prompt", "The cat is", "--max-new-tokens", "6", "--json"])
    d = json.loads(out)
    assert rc == 0 and d["prompt_tokens"] == prompt and d["tokens"] == tiny_tokens("The cat is", 6)
    assert d["text"] == " ".join(TUTORIAL_WORDS[t] for t in d["tokens"]) and d["finish_reason"] == "length"
    # greedy: the model's own log-softmax; sampling at T = 1 without filters: the same distribution
    assert np.allclose(d["logprobs"], log_softmax_at(model, prompt, d["tokens"]), atol=1e-5)
    rc, out, _ = run_cli(["--tiny", "--prompt", "The cat is", "--max-new-tokens", "6", "--json", "--temperature",
                          "1", "--seed", "5"])
    d = json.loads(out)
    # (--seed also seeds --tiny's weights)
    assert np.allclose(d["logprobs"], log_softmax_at(tiny_model(5).model, prompt, d["tokens"]), atol=1e-5)
    # top-k 1 leaves one token: probability 1, and the greedy tokens
    rc, out, _ = run_cli(["--tiny", "--prompt", "The cat is", "--max-new-tokens", "6", "--json", "--temperature",
                          "0.7", "--top-k", "1", "--seed", "5"])
    d = json.loads(out)
    assert d["logprobs"] == [0.0] * 6 and d["tokens"] == tiny_tokens("The cat is", 6, seed=5)


def test_generate_cli_sampling_options_reach_the_sampler():
    from swaref.models import sampling as S
    from swaref.models.text import tiny_model
    argv = ["--tiny", "--prompt", "The cat is", "--max-new-tokens", "8", "--json", "--seed", "9",
            "--temperature", "1.3", "--top-k", "5", "--top-p", "0.9", "--min-p", "0.1"]
    d = json.loads(run_cli(argv)[1])
    want = M.generate(tiny_model(9).model, [[0, 1, 2]], max_new_tokens=8, sample=S.make_sampler(
        S.SamplingParams(1.3, 0.9, 9, top_k=5, min_p=0.1))).tokens[0]
    assert d["tokens"] == want


def test_generate_cli_stop_string_ends_the_text_before_it():
    full = [TUTORIAL_WORDS[t] for t in tiny_tokens("The cat is", 12)]
    stop = full[3]
    first = full.index(stop)
    rc, out, err = run_cli(["--tiny", "--prompt", "The cat is", "--max-new-tokens", "12", "--stop", stop,
                            "--stop", "zzz"])
    assert rc == 0 and out == " ".join(full[:first]) + (" " if first else "") + "\n"
    assert "stopped at a stop string" in err
    d = json.loads(run_cli(["--tiny", "--prompt", "The cat is", "--max-new-tokens", "12", "--stop", stop,
                            "--json"])[1])
    assert d["finish_reason"] == "stop" and d["stop"] == stop and len(d["tokens"]) == first + 1


# ------------------------------------------------------------------ a checkpoint with a tokenizer

@pytest.fixture
def checkpoint(tmp_path):
    model = make_model(seed=6)
    d = write_checkpoint(str(tmp_path), model)
    words = [f"w{i}" for i in range(61)]
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="w0"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.decoder = tokenizers.decoders.WordPiece()  # joins tokens with spaces
    tok.save(os.path.join(d, "tokenizer.json"))
    return d, model, words


@needs_safetensors
@needs_tokenizers
def test_generate_cli_with_a_checkpoint_and_tokenizer(checkpoint):
    d, model, words = checkpoint
    want = M.generate(model, [[5, 17, 3, 44, 9]], max_new_tokens=7, stop_on_eos=False).tokens[0]
    rc, out, _ = run_cli(["--model", d, "--prompt", "w5 w17 w3 w44 w9", "--max-new-tokens", "7", "--no-stop"])
    assert rc == 0 and out.split() == [words[t] for t in want]
    # --prompt-ids: ids even though a tokenizer exists
    rc, out, _ = run_cli(["--model", d, "--prompt-ids", "5 17 3 44 9", "--max-new-tokens", "7", "--no-stop"])
    assert out.split() == [words[t] for t in want]
    rc, _, err = run_cli(["--model", d, "--prompt-ids", "5 x", "--max-new-tokens", "1"])
    assert rc == 2 and "--prompt-ids must be token ids" in err
    rc, _, err = run_cli(["--model", d, "--prompt-ids", "5 999", "--max-new-tokens", "1"])
    assert rc == 2 and "outside the vocabulary" in err
    # --model without a prompt option reads a prompt redirected to standard input
    path = os.path.join(d, "prompt.txt")
    with open(path, "w") as f:
        f.write("w5 w17 w3 w44 w9\n")
    with open(path) as piped:
        rc, out, _ = run_cli(["--model", d, "--max-new-tokens", "7", "--no-stop"], stdin=piped)
    assert rc == 0 and out.split() == [words[t] for t in want]
    # the real command, a real pipe
    import subprocess
    import sys
    import swaref                                          # the same swaref as this test run (source tree or installed)
    root = os.path.dirname(os.path.dirname(os.path.abspath(swaref.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-m", "swaref", "generate", "--model", d, "--max-new-tokens", "7",
                        "--no-stop"], input="w5 w17 w3 w44 w9\n", capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and r.stdout.split() == [words[t] for t in want], r.stderr
    os.remove(os.path.join(d, "tokenizer.json"))
    rc, out, _ = run_cli(["--model", d, "--prompt", "5 17 3 44 9", "--max-new-tokens", "7", "--no-stop"])
    assert [int(x) for x in out.split()] == want
    rc, _, err = run_cli(["--model", d, "--prompt", "hello", "--max-new-tokens", "1"])
    assert rc == 2 and "token ids" in err and "no tokenizer.json" in err


@needs_safetensors
@needs_tokenizers
@needs_jinja2
def test_generate_cli_chat_renders_the_checkpoint_template(checkpoint):
    d, model, words = checkpoint
    rc, _, err = run_cli(["--model", d, "--prompt", "w7", "--chat"])
    assert rc == 2 and "no chat template" in err
    with open(os.path.join(d, "chat_template.jinja"), "w") as f:
        f.write("{{ bos_token }} {% for m in messages %}{% if m['role'] == 'system' %}w4 {% endif %}"
                "{{ m['content'] }} {% endfor %}{% if add_generation_prompt %}w9{% endif %}")
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "w1"}, f)
    rc, out, _ = run_cli(["--model", d, "--prompt", "w7 w8", "--chat", "--system", "w30", "--json",
                          "--max-new-tokens", "3", "--no-stop"])
    doc = json.loads(out)
    # By hand: "w1 " + "w4 w30 " + "w7 w8 " + "w9"
    assert rc == 0 and doc["prompt_tokens"] == [1, 4, 30, 7, 8, 9]
    assert doc["tokens"] == M.generate(model, [[1, 4, 30, 7, 8, 9]], max_new_tokens=3, stop_on_eos=False).tokens[0]
    rc, _, err = run_cli(["--model", d, "--prompt-ids", "1 2", "--chat"])
    assert rc == 2 and "--chat takes text" in err


def test_generate_cli_chat_without_jinja2_names_the_extra(monkeypatch, tmp_path):
    import sys
    from swaref.models import chat, text
    monkeypatch.setitem(sys.modules, "jinja2", None)
    monkeypatch.setattr(chat, "_ENV", {})
    monkeypatch.setattr(text.TextModel, "__init__", _with_template(text.TextModel.__init__))
    rc, _, err = run_cli(["--tiny", "--prompt", "The cat", "--chat"])
    assert rc == 2 and "swaref[chat]" in err and "jinja2" in err


def _with_template(init):
    def patched(self, *a, **kw):
        init(self, *a, **kw)
        self.chat_template = "{{ messages[0]['content'] }}"
    return patched


# ------------------------------------------------------------------ errors

@pytest.mark.parametrize("argv,message", [
    (["--max-new-tokens", "-1"], "max_new_tokens must be an int >= 0, got -1"),
    (["--temperature", "-1"], "temperature"),
    (["--seed", "-1"], "seed must be an int >= 0, got -1"),
    (["--top-k", "-1"], "top_k must be an int >= 0, got -1"),
    (["--top-p", "0"], "top_p must be a number in (0, 1]"),
    (["--min-p", "2"], "min_p must be a number in [0, 1]"),
    (["--system", "x"], "--system needs --chat"),
    (["--stop", ""], "stop[0] must be a non-empty string"),
    (["--chat"], "--tiny has no chat template"),
    (["--chunk-size", "0", "--max-new-tokens", "1"], "chunk_size"),
    (["--prompt-ids", "1 99", "--max-new-tokens", "1"], "outside the vocabulary [0, 16)"),
])
def test_generate_cli_rejections_name_the_argument_and_exit_2(argv, message):
    rc, out, err = run_cli(["--tiny"] + argv)
    assert rc == 2 and message in err, err


def test_generate_cli_reports_a_missing_model(tmp_path, capsys):
    rc = main(["generate", "--model", str(tmp_path / "none"), "--prompt", "x"])
    assert rc == 2
    assert "does not exist" in capsys.readouterr().err


def test_generate_cli_does_not_hide_bugs(tmp_path, monkeypatch):
    from swaref.models import checkpoint

    def broken(*args, **kwargs):
        raise ValueError("a bug, not a rejection")
    monkeypatch.setattr(checkpoint, "load_model", broken)
    with pytest.raises(ValueError, match="a bug"):
        main(["generate", "--model", str(tmp_path), "--prompt", "1 2"])


def test_generate_cli_refuses_caches_beyond_memory_with_a_message(capsys):
    # --tiny has a full-attention layer: 10**13 new tokens would need petabytes of cache.
    assert main(["generate", "--tiny", "--max-new-tokens", str(10 ** 13)]) == 2
    err = capsys.readouterr().err
    assert "swaref generate: a cache of" in err and ("could not be allocated" in err or "more than any array" in err)
