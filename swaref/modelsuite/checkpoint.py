"""A case's tiny checkpoint in the Hugging Face layout: config.json, model.safetensors, tokenizer.json.

The config.json is the case's keys; swaref reads it as transformers does
(``swaref.models.hfconfig.config_from_dict``), and the tensors it expects, with
their names in the file, come from the loader's own table
(``swaref.models.checkpoint.expected_tensors``): the writer is the loader read
backwards, fused tensors concatenated, experts one tensor each, Gemma's norms
stored as w - 1.

Weights are drawn so that a window error shows: embeddings N(0, 1); matrices
N(0, 1.5^2 / fan_in); the query and key projections (or, for a model with q/k
norms, the norm weights) multiplied by the case's ``qk_gain``, so that the
attention scores spread over several units and each query attends mostly to a
few keys; norm weights 1 +- 0.1 and biases N(0, 0.3^2).  Every tensor is
float32; the bytes depend only on the case (seeded NumPy generator, sorted
safetensors header, canonical JSON).
"""
import hashlib
import json

import numpy as np

from ..conformance import safetensors_io as ST
from ..models.architectures import ARCHITECTURES
from ..models.checkpoint import expected_tensors
from ..models.hfconfig import config_from_dict
from ..models.weights import LayerWeights, Model, expected_shapes
from .cases import FIRST_CHAR, SPECIALS, VOCAB

#: Tensors Gemma-style checkpoints store as w - 1 (the loader adds 1: checkpoint._convert).
NORMS = ("final_norm", "attn_norm", "attn_out_norm", "mlp_norm", "mlp_out_norm", "q_norm", "k_norm")


def canonical_json(doc):
    """The bytes of a JSON document as the suite writes it: sorted keys, indented, one trailing newline."""
    return (json.dumps(doc, sort_keys=True, indent=1, ensure_ascii=True, allow_nan=False) + "\n").encode()


def model_config(case):
    """The case's ModelConfig, read from its config.json as swaref reads any checkpoint."""
    return config_from_dict(case.config_json(), f"{case.id}/config.json")


def random_weights(case, cfg):
    """A Model with the case's seeded weights (scaled so that attention is peaked; see the module doc)."""
    # Seeded by the case id and seed: a case's weights do not change when other cases are added.
    rng = np.random.default_rng([case.seed, int.from_bytes(hashlib.sha256(case.id.encode()).digest()[:8], "little")])
    top, layer = expected_shapes(cfg)
    gain = case.qk_gain

    def draw(name, shape):
        if name in ("q_norm", "k_norm"):
            return (gain + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        if len(shape) == 1:
            if name.startswith("b") or name.endswith("_b"):
                return (0.3 * rng.standard_normal(shape)).astype(np.float32)
            return (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        s = 1.5 / np.sqrt(shape[-1])
        if name in ("wq", "wk") and cfg.qk_norm == "":
            s *= np.sqrt(gain)
        return (s * rng.standard_normal(shape)).astype(np.float32)

    embed = rng.standard_normal(top["embed"]).astype(np.float32)
    layers = [LayerWeights(**{n: draw(n, s) for n, s in layer.items()}) for _ in range(cfg.n_layers)]
    lm_head = embed if cfg.tie_word_embeddings else draw("lm_head", top["lm_head"])
    final_b = draw("final_norm_b", top["final_norm_b"]) if "final_norm_b" in top else None
    return Model(cfg, embed, layers, draw("final_norm", top["final_norm"]), lm_head, final_b)


def file_tensors(model):
    """name in model.safetensors -> float32 array: the loader's table (expected_tensors) read backwards."""
    cfg = model.config
    minus_one = ARCHITECTURES[cfg.arch].norm_plus_one

    def get(i, key):
        arr = getattr(model, key) if i is None else getattr(model.layers[i], key)
        return arr - np.float32(1.0) if minus_one and key in NORMS else arr

    out = {}
    for name, (slot, shape) in expected_tensors(cfg, "hf").items():
        if isinstance(slot, str):
            arr = get(None, slot)
        elif slot[0] == "split":
            arr = np.concatenate([get(slot[1], k) for k in slot[2]], axis=0)
        elif slot[0] == "stack":
            arr = get(slot[1], slot[2])[slot[3]]
        else:
            arr = get(*slot)
        assert arr.shape == tuple(shape), (name, arr.shape, shape)
        out[name] = np.ascontiguousarray(arr, dtype=np.float32)
    return out


def tokenizer_json():
    """A small tokenizer.json: BPE without merges over 93 one-character tokens, so the text "abc" is the
    ids of 'a', 'b', 'c' and decodes back to "abc"; ids 0-2 are <unk>, <s>, </s> (special, skipped when
    decoding).  byte_fallback and a Sequence decoder make it the shape of Llama's tokenizer.json, which
    llama.cpp's converter accepts (its LlamaHfVocab); a prompt never needs the fallback."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    vocab.update({chr(FIRST_CHAR + i): len(SPECIALS) + i for i in range(VOCAB - len(SPECIALS))})
    added = [{"id": i, "content": tok, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
              "special": True} for i, tok in enumerate(SPECIALS)]
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
            "pre_tokenizer": None, "post_processor": None,
            "decoder": {"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Fuse"}]},
            "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": True, "ignore_merges": False,
                      "vocab": vocab, "merges": []}}


def text_of(tokens):
    """The text a prompt of non-special token ids spells (one character per token)."""
    return "".join(chr(FIRST_CHAR + int(t) - len(SPECIALS)) for t in tokens)


def checkpoint_files(case):
    """-> ({file name: bytes} of the case's checkpoint, the Model those bytes hold)."""
    cfg = model_config(case)
    model = random_weights(case, cfg)
    files = {"config.json": canonical_json(case.config_json()),
             "model.safetensors": ST.encode(file_tensors(model), metadata={"format": "pt"}),
             "tokenizer.json": canonical_json(tokenizer_json())}
    return files, model

