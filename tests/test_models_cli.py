"""swaref.models.cli: ``swaref generate`` end to end (--tiny, a written checkpoint with a tokenizer, errors)."""
import os

import pytest

from model_helpers import make_model, needs_safetensors, write_checkpoint

from swaref import models as M


def test_generate_cli_tiny_runs_and_says_noise(capsys):
    from swaref.cli import main
    rc = main(["generate", "--tiny", "--prompt", "hello sliding window", "--max-new-tokens", "6", "--seed", "1"])
    out = capsys.readouterr()
    assert rc == 0
    text = out.out + out.err
    assert "noise" in text and "prefill" in text and "decode" in text and "cache" in text

def test_generate_cli_tiny_defaults_to_the_tutorial_prompt_and_model_needs_one(capsys, tmp_path):
    from swaref.cli import main
    assert main(["generate", "--tiny", "--max-new-tokens", "2"]) == 0
    # The byte-level codec gives one token per byte of the tutorial's 49-character sentence.
    assert "prompt 49 tokens" in capsys.readouterr().err
    assert main(["generate", "--model", str(tmp_path)]) == 2
    assert "--prompt is required with --model" in capsys.readouterr().err

def test_generate_cli_long_prompt_draws_a_progress_bar(capsys):
    from swaref.cli import main
    assert main(["generate", "--tiny", "--prompt", "x" * 40, "--max-new-tokens", "2", "--chunk-size", "8"]) == 0
    err = capsys.readouterr().err
    assert "prefill [" in err and "40/40 tokens" in err

@needs_safetensors
def test_generate_cli_with_a_checkpoint_and_tokenizer(tmp_path, capsys):
    tokenizers = pytest.importorskip("tokenizers", reason="needs the 'tokenizers' package (pip install swaref[model])")
    from swaref.cli import main
    model = make_model(seed=6)
    d = write_checkpoint(str(tmp_path), model)
    words = [f"w{i}" for i in range(61)]
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="w0"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.decoder = tokenizers.decoders.WordPiece()  # joins tokens with spaces
    tok.save(os.path.join(d, "tokenizer.json"))
    prompt = "w5 w17 w3 w44 w9"
    assert main(["generate", "--model", d, "--prompt", prompt, "--max-new-tokens", "7", "--no-stop"]) == 0
    out = capsys.readouterr().out.split()
    want = M.generate(model, [[5, 17, 3, 44, 9]], max_new_tokens=7, stop_on_eos=False).tokens[0]
    assert out == [words[t] for t in want]
    os.remove(os.path.join(d, "tokenizer.json"))
    assert main(["generate", "--model", d, "--prompt", "5 17 3 44 9", "--max-new-tokens", "7", "--no-stop"]) == 0
    assert [int(x) for x in capsys.readouterr().out.split()] == want
    assert main(["generate", "--model", d, "--prompt", "hello", "--max-new-tokens", "1"]) == 2
    assert "token ids" in capsys.readouterr().err

def test_generate_cli_reports_a_missing_model(tmp_path, capsys):
    from swaref.cli import main
    rc = main(["generate", "--model", str(tmp_path / "none"), "--prompt", "x"])
    assert rc != 0
    assert "does not exist" in capsys.readouterr().err


def test_generate_cli_reports_rejections_but_does_not_hide_bugs(tmp_path, capsys, monkeypatch):
    from swaref.cli import main
    from swaref.models import checkpoint
    assert main(["generate", "--tiny", "--max-new-tokens", "-1"]) == 2
    assert "max_new_tokens must be an int >= 0, got -1" in capsys.readouterr().err
    assert main(["generate", "--tiny", "--temperature", "-1"]) == 2
    assert "temperature" in capsys.readouterr().err
    assert main(["generate", "--tiny", "--seed", "-1"]) == 2
    assert "seed must be an int >= 0, got -1" in capsys.readouterr().err
    assert main(["generate", "--tiny", "--chunk-size", "0", "--max-new-tokens", "1"]) == 2
    assert "chunk_size" in capsys.readouterr().err

    def broken(*args, **kwargs):
        raise ValueError("a bug, not a rejection")
    monkeypatch.setattr(checkpoint, "load_model", broken)
    with pytest.raises(ValueError, match="a bug"):
        main(["generate", "--model", str(tmp_path), "--prompt", "1 2"])


def test_generate_cli_refuses_caches_beyond_memory_with_a_message(capsys):
    from swaref.cli import main
    # --tiny has a full-attention layer: 10**13 new tokens would need petabytes of cache.
    assert main(["generate", "--tiny", "--max-new-tokens", str(10 ** 13)]) == 2
    err = capsys.readouterr().err
    assert "swaref generate: a cache of" in err and ("could not be allocated" in err or "more than any array" in err)
