"""Where a decode step's time goes outside BLAS and the attention kernel (issue 13, section 2).

A random 124.7M-parameter Mistral (12 layers, d 768, 12 query / 4 KV heads of 64,
FFN 2048, vocabulary 32000, W 512, float32; swaref.models.random_model, no
checkpoint needed) is prefilled with a prompt past W (the rings have wrapped),
then decoded one token at a time through ``swaref.models.forward`` on the
compiled backend.  Each category's time is measured by wrapping the module-level
functions a decode step calls (timers around the calls, nothing else changed):

* the fused decode layer's three compiled calls (``swaref._linear.attention_inputs``,
  ``mlp_inputs``, ``residual_linear``): a layer's seven projections with its two
  RMSNorms, RoPE and residual adds beside them (layers._fused_decoder_layer);
* BLAS: ``layers.linear`` (the projections, where a layer is not fused: --unfused)
  and the LM head (timed alone, same shapes, since it is an inline ``@``);
* attention kernel: ``layers._decode`` (decode_step's core: cache write + kernel);
* RMSNorm (``layers.rms_norm``, the final norm; every norm with --unfused), RoPE
  (``layers.rotate``, --unfused), SwiGLU's element-wise part (``layers.glu``);
* the rest: the step minus all of the above (step checks and cache locks, the
  embedding gather, reshapes, Python calls; with --unfused, residual adds and copies).

Run: PYTHONPATH=. OPENBLAS_NUM_THREADS=1 python benchmarks/profile_decode_step.py [--steps N] [--unfused]
Numbers depend on the machine and its load; the shares are what issue 13 asks for.
"""
import argparse
import collections
import time

import numpy as np

from swaref.models import ModelConfig, forward, new_caches, prefill_prompt, random_model
from swaref.models import layers as L

CONFIG = dict(vocab_size=32000, hidden_size=768, intermediate_size=2048, n_layers=12, n_heads=12, n_kv_heads=4,
              head_dim=64, windows=512, rope_theta=10000.0, rms_norm_eps=1e-5)

TIMED = {"linear": "BLAS (projections)", "_decode": "attention kernel (+ cache write)", "rms_norm": "RMSNorm",
         "rotate": "RoPE", "glu": "SwiGLU element-wise"}
# The fused decode layer's compiled calls (swaref._linear; layers._fused_decoder_layer): the
# projections with the norms, RoPE and residual adds done beside them in compiled code.
FUSED = {"attention_inputs": "fused: RMSNorm + q/k/v projections + RoPE",
         "mlp_inputs": "fused: o projection + residual + RMSNorm + gate/up",
         "residual_linear": "fused: down projection + residual"}


def instrument(totals, counts):
    """Wrap the functions in TIMED inside swaref.models.layers and those in FUSED inside
    swaref._linear; returns a function that undoes it."""
    K = L._linear_kernel()
    saved = {name: getattr(L, name) for name in TIMED}
    saved_fused = {name: getattr(K, name) for name in FUSED}

    def wrap(name, fn):
        def timed(*args, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                totals[name] += time.perf_counter() - t0
                counts[name] += 1
        return timed

    for name, fn in saved.items():
        setattr(L, name, wrap(name, fn))
    for name, fn in saved_fused.items():
        setattr(K, name, wrap(name, fn))
    # generation.py imported norm by name; the final norm goes through layers.norm -> layers.rms_norm.
    return lambda: ([setattr(L, n, f) for n, f in saved.items()], [setattr(K, n, f) for n, f in saved_fused.items()])


def decode(model, caches, tok, steps, backend):
    t0 = time.perf_counter()
    for _ in range(steps):
        logits = forward(model, [tok], caches, backend=backend, logits="last")
        tok = int(np.argmax(logits[-1]))
    return time.perf_counter() - t0, tok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompt", type=int, default=600)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--backend", default="cython")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    ap.add_argument("--unfused", action="store_true",
                    help="run every layer through the NumPy glue (no fused decode layer), as before it")
    args = ap.parse_args()
    if args.unfused:
        L.fused_decode = lambda cfg, lw: False
    cfg = ModelConfig(**CONFIG)
    model = random_model(cfg, seed=0, dtype=args.dtype)
    print(f"model: {model.n_params / 1e6:.1f}M parameters; prompt {args.prompt}, {args.steps} decode steps, "
          f"backend {args.backend}, {args.dtype} weights")
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, args.prompt)
    n_total = args.prompt + 3 * args.steps + 2
    caches = new_caches(model, n_total)
    prefill_prompt(model, ids, caches, backend=args.backend)
    tok = int(ids[-1])
    _, tok = decode(model, caches, tok, 20, args.backend)                    # warm-up
    plain, tok = decode(model, caches, tok, args.steps, args.backend)        # uninstrumented
    totals, counts = collections.defaultdict(float), collections.defaultdict(int)
    undo = instrument(totals, counts)
    try:
        timed, tok = decode(model, caches, tok, args.steps, args.backend)
    finally:
        undo()
    # The LM head's product is called from generation._forward_checked: time the same product alone.
    x = np.random.default_rng(1).standard_normal((1, cfg.hidden_size)).astype(np.float32)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        L.linear(x, model.lm_head, None, args.backend)
    head = time.perf_counter() - t0
    n = args.steps
    step = timed / n
    print(f"decode step: {plain / n * 1e3:.2f} ms uninstrumented, {step * 1e3:.2f} ms instrumented")
    rows = [(TIMED[k], totals[k] / n, counts[k] / n) for k in TIMED]
    rows.insert(1, ("BLAS (LM head)", head / n, 1))
    rows[2:2] = [(FUSED[k], totals[k] / n, counts[k] / n) for k in FUSED]
    known = sum(t for _, t, _ in rows)
    rows.append(("the rest (checks, embedding, residuals, copies, Python)", step - known, 0))
    for label, t, c in rows:
        print(f"  {label:58s} {t * 1e6:9.1f} us  {100 * t / step:5.1f} %" + (f"  ({c:.0f} calls)" if c else ""))
    blas = rows[0][1] + rows[1][1]
    fused = sum(totals[k] for k in FUSED) / n
    attn = totals["_decode"] / n
    print(f"outside BLAS, the fused calls and the attention kernel: {(step - blas - fused - attn) * 1e6:.1f} us = "
          f"{100 * (step - blas - fused - attn) / step:.1f} % of the step")


if __name__ == "__main__":
    main()
