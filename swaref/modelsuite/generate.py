"""Writing a model suite: per case a checkpoint folder and a golden file, then manifest.json.

For each case (``cases.cases_of(suite)``): the checkpoint bytes are built
(``checkpoint.checkpoint_files``) and loaded back with swaref's own loader, so
the golden values are those of the model any loader reads from the folder;
a prompt of 3W + 5 seeded tokens is extended by 8 greedy tokens of the float64
reference; the golden logits of every position are computed in float64
(``reference.logits``) and by swaref's float32 forward pass; every applicable
known-wrong variant is computed and must miss by at least ``MIN_MISS``
tolerance units, and differ from every other variant by ``SEPARATION``
(``GeneratorError`` otherwise: the case would not catch its bug).

Layout of OUT:

    manifest.json                    hashes of every file below, the variants, the tolerance
    <id>/config.json                 the checkpoint, in the Hugging Face layout
    <id>/model.safetensors
    <id>/tokenizer.json
    <id>.golden.safetensors          tokens, logits (F64), logits_f32, variant.<name> (F32)

The same swaref version writes the same bytes (seeded generators, sorted JSON
and safetensors headers); the manifest's ``suite_hash`` identifies the suite.
"""
import hashlib
import os

import numpy as np

from .. import __version__
from ..conformance import safetensors_io as ST
from ..conformance.suite import manifest_hash
from ..models import load_model, new_caches, prefill_prompt
from . import reference as R
from .cases import (ATOL, GREEDY_MARGIN, MIN_MISS, N_NEW, RTOL, SEPARATION, SPECIALS, VOCAB, GeneratorError,
                    cases_of)
from .checkpoint import canonical_json, checkpoint_files, text_of
from .variants import applicable, safe_name

FORMAT = "swaref-model-suite"
FORMAT_VERSION = 1
GOLDEN_SUFFIX = ".golden.safetensors"
CHECKPOINT_FILES = ("config.json", "model.safetensors", "tokenizer.json")


def units(result, golden):
    """[T] per position: max over the vocabulary of |result - golden| / (ATOL + RTOL |golden|) (NaN: inf)."""
    r, g = np.asarray(result, dtype=np.float64), np.asarray(golden, dtype=np.float64)
    u = np.abs(r - g) / (ATOL + RTOL * np.abs(g))
    return np.where(np.isfinite(u), u, np.inf).max(axis=1)


def first_divergence(u):
    """The first position whose error exceeds 1 unit, or None."""
    bad = np.nonzero(u > 1.0)[0]
    return int(bad[0]) if bad.size else None


def prompt_tokens(case):
    """[3W + 5] seeded token ids, none of them special."""
    rng = np.random.default_rng([case.seed, 7, case.prompt_len])
    return rng.integers(len(SPECIALS), VOCAB, case.prompt_len).astype(np.int64)


def swaref_f32(model, tokens):
    """swaref's float32 forward pass over every position (chunked prefill, the smallest window per chunk)."""
    return prefill_prompt(model, tokens, new_caches(model, len(tokens)), logits="all")


def build_case(case, folder):
    """Write case's checkpoint into folder/<id>/ -> (golden tensors, metadata, manifest entry minus hashes)."""
    files, _ = checkpoint_files(case)
    cdir = os.path.join(folder, case.id)
    os.makedirs(cdir, exist_ok=True)
    for name, data in files.items():
        with open(os.path.join(cdir, name), "wb") as f:
            f.write(data)
    model = load_model(cdir)
    tokens, margin = R.greedy(model, prompt_tokens(case), N_NEW)
    if margin < GREEDY_MARGIN * ATOL:
        raise GeneratorError(f"{case.id}: a greedy step's top two logits are {margin:.3g} apart (< "
                             f"{GREEDY_MARGIN} * ATOL): the continuation would depend on rounding")
    plan = R.correct_plan(model)
    golden = R.logits(model, tokens, plan)
    f32 = swaref_f32(model, tokens)
    if units(f32, golden).max() > 0.1:
        raise GeneratorError(f"{case.id}: swaref's float32 logits are {units(f32, golden).max():.3g} tolerance units "
                             f"from the float64 reference (> 0.1)")
    tensors = {"tokens": tokens, "logits": golden, "logits_f32": f32.astype(np.float32)}
    variants, seen = [], []
    for name, wrong in _merged(applicable(model, plan, case.window)).items():
        lv = R.logits(model, tokens, wrong)
        u = units(lv, golden)
        if u.max() < MIN_MISS:
            raise GeneratorError(f"{case.id}: variant {name!r} misses by only {u.max():.3g} tolerance units "
                                 f"(< {MIN_MISS})")
        for other, lo in seen:
            sep = units(lv, lo).max()
            if sep < SEPARATION:
                raise GeneratorError(f"{case.id}: variants {other!r} and {name!r} differ by only {sep:.3g} units")
        seen.append((name, lv))
        key = "variant." + safe_name(name)
        tensors[key] = lv.astype(np.float32)
        variants.append({"name": name, "tensor": key, "miss_units": round(float(u.max()), 1),
                         "diverges_at": first_divergence(u)})
    cfg = model.config
    meta = {"case_id": case.id, "prompt_len": str(case.prompt_len), "prompt_text": text_of(tokens[:case.prompt_len]),
            "window": str(case.window)}
    entry = {"id": case.id, "model_type": case.model_type, "about": case.about, "window": case.window,
             "windows": list(cfg.windows), "n_layers": cfg.n_layers, "vocab_size": cfg.vocab_size,
             "tokens": int(len(tokens)), "prompt_tokens": case.prompt_len, "variants": variants}
    return tensors, meta, entry, files


def _merged(variants):
    """Variants whose plans are identical (a 1:1 pattern shifted is the pattern inverted) under one name."""
    out = {}
    for name, plan in variants.items():
        same = next((n for n, p in out.items() if p == plan), None)
        if same is None:
            out[name] = plan
        else:
            out[f"{same} / {name}"] = out.pop(same)
    return out


def _digest(data):
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def generate_suite(out, suite="core", log=None):
    """Write the suite into folder ``out`` (created if needed) -> the manifest dict."""
    chosen = cases_of(suite)
    os.makedirs(out, exist_ok=True)
    entries = []
    for case in chosen:
        tensors, meta, entry, files = build_case(case, out)
        data = ST.write(os.path.join(out, case.id + GOLDEN_SUFFIX), tensors, metadata=meta)
        entry["files"] = {name: _digest(files[name]) for name in CHECKPOINT_FILES}
        entry["golden"] = dict(_digest(data), file=case.id + GOLDEN_SUFFIX)
        entries.append(entry)
        if log is not None:
            log(case.id)
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "suite": suite,
                "generator": {"name": "swaref", "version": __version__, "module": "swaref.modelsuite"},
                "tolerance": {"atol": ATOL, "rtol": RTOL, "rule": "|engine - golden| <= atol + rtol * |golden| "
                                                                 "for every logit of every position",
                              "min_wrong_variant_miss_units": MIN_MISS, "variant_separation_units": SEPARATION},
                "greedy_tokens": N_NEW, "cases": entries}
    manifest["suite_hash"] = manifest_hash(manifest)
    with open(os.path.join(out, "manifest.json"), "wb") as f:
        f.write(canonical_json(manifest))
    return manifest
