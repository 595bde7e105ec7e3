"""End-to-end generation on the CPU: swaref's model vs transformers on one random checkpoint.

    python benchmarks/bench_generate.py [--prompt 1024] [--new 32] [--threads 2] [--quick]

A ~100M-parameter Mistral config with W = 512 is built by transformers,
saved with save_pretrained to a temporary directory, and then each engine runs
in its own subprocess (so that each one's peak resident memory, VmHWM, is its
own): load the checkpoint, prefill a prompt, decode tokens one at a time, and
time single decode steps at position ~600 and ~6,000 (the rolling cache holds
W slots, so a step should cost the same at both).  Results are printed side by
side with ratios.  Needs the crosscheck extra (torch, transformers).
"""
import argparse
import inspect
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

CONFIG = dict(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=8,
              num_attention_heads=12, num_key_value_heads=4, head_dim=64, sliding_window=512,
              rope_theta=10000.0, rms_norm_eps=1e-5, max_position_embeddings=8192, tie_word_embeddings=False)
POSITIONS = (600, 6000)
STEPS_AT_POSITION = 16


def peak_rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss():
    """Reset VmHWM to the current RSS (Linux >= 4.0), so the next peak is the inference's own."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def make_checkpoint(d, config):
    import torch
    from transformers import MistralConfig, MistralForCausalLM
    torch.manual_seed(0)
    model = MistralForCausalLM(MistralConfig(**config))
    model.save_pretrained(d)
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------- workers

def time_at_positions(new_cache, prefill, step, ids):
    """Median seconds of one decode step at each of POSITIONS.

    One cache per position is prefilled up to it; then steps alternate between
    the caches, so drift (frequency, other processes) hits every position alike.
    """
    caches = {}
    for pos in POSITIONS:
        caches[pos] = new_cache()
        prefill(ids[:pos], caches[pos])
    times = {pos: [] for pos in POSITIONS}
    for i in range(STEPS_AT_POSITION):
        for pos in POSITIONS:
            t0 = time.perf_counter()
            step(ids[pos + i: pos + i + 1], caches[pos])
            times[pos].append(time.perf_counter() - t0)
    return {pos: float(np.median(t)) for pos, t in times.items()}


def worker_swaref(d, prompt_len, n_new, backend, threads, dtype="float32"):
    from swaref import models as M
    from swaref.models import load_model
    model = load_model(d, dtype=dtype)
    rss_loaded, peak_load = rss_mib(), peak_rss_mib()
    reset_peak_rss()
    rng = np.random.default_rng(0)
    ids = rng.integers(3, model.config.vocab_size, max(prompt_len, max(POSITIONS)) + 64)
    caches = M.new_caches(model, len(ids))
    t0 = time.perf_counter()
    logits = M.prefill_prompt(model, ids[:prompt_len], caches, backend=backend, num_threads=threads)
    t_prefill = time.perf_counter() - t0
    tok = int(np.argmax(logits[-1]))
    t0 = time.perf_counter()
    for _ in range(n_new):
        tok = int(np.argmax(M.forward(model, [tok], caches, backend=backend, num_threads=threads,
                                      logits="last")[-1]))
    t_decode = time.perf_counter() - t0
    at = time_at_positions(
        lambda: M.new_caches(model, len(ids)),
        lambda toks, c: M.prefill_prompt(model, toks, c, backend=backend, num_threads=threads),
        lambda toks, c: M.forward(model, toks, c, backend=backend, num_threads=threads, logits="last"), ids)
    return dict(prefill_tok_s=prompt_len / t_prefill, decode_tok_s=n_new / t_decode,
                step_ms={str(p): 1e3 * t for p, t in at.items()}, rss_loaded_mib=rss_loaded,
                peak_load_mib=peak_load, peak_rss_mib=peak_rss_mib(), cache_bytes=M.cache_nbytes(caches))


def worker_transformers(d, prompt_len, n_new, attn, threads):
    import torch
    from transformers import DynamicCache, MistralForCausalLM
    torch.set_num_threads(threads)
    model = MistralForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation=attn).eval()
    rss_loaded, peak_load = rss_mib(), peak_rss_mib()
    reset_peak_rss()
    # transformers 5.x renamed forward's past_key_values to cache.
    cache_kwarg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    rng = np.random.default_rng(0)
    ids = torch.tensor(rng.integers(3, model.config.vocab_size, max(prompt_len, max(POSITIONS)) + 64))

    def step(x, cache):
        return model(x[None], use_cache=True, logits_to_keep=1, **{cache_kwarg: cache}).logits[0, -1]

    with torch.inference_mode():
        cache = DynamicCache(config=model.config)
        t0 = time.perf_counter()
        logits = step(ids[:prompt_len], cache)
        t_prefill = time.perf_counter() - t0
        tok = logits.argmax()
        t0 = time.perf_counter()
        for _ in range(n_new):
            tok = step(tok.reshape(1), cache).argmax()
        t_decode = time.perf_counter() - t0
        W = CONFIG["sliding_window"]
        # transformers would prefill 6,000 tokens in one forward; chunks of W keep its mask as small as swaref's.
        at = time_at_positions(
            lambda: DynamicCache(config=model.config),
            lambda toks, c: [step(toks[a:a + W], c) for a in range(0, len(toks), W)],
            step, ids)
    return dict(prefill_tok_s=prompt_len / t_prefill, decode_tok_s=n_new / t_decode,
                step_ms={str(p): 1e3 * t for p, t in at.items()}, rss_loaded_mib=rss_loaded,
                peak_load_mib=peak_load, peak_rss_mib=peak_rss_mib(), torch=torch.__version__)


# --------------------------------------------------------------------- driver

def run_worker(engine, variant, d, args):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", engine, "--variant", variant, "--dir", d,
           "--prompt", str(args.prompt), "--new", str(args.new), "--threads", str(args.threads), "--dtype", args.dtype]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads))
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        print(f"{engine}/{variant} failed:\n{out.stderr[-2000:]}", file=sys.stderr)
        return None
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["wall_s"] = time.perf_counter() - t0
    return res


def machine():
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    blas = "?"
    try:
        from threadpoolctl import threadpool_info
        blas = ", ".join(f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')})"
                         for i in threadpool_info() if i.get("user_api") == "blas")
    except ImportError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs; NumPy {np.__version__}, BLAS: {blas}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompt", type=int, default=1024)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--engines", default="swaref:cython,swaref:reference,transformers:sdpa,transformers:eager")
    ap.add_argument("--worker")
    ap.add_argument("--variant")
    ap.add_argument("--dir")
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                    help="swaref's weight precision (load_model's dtype); the other engines stay float32")
    args = ap.parse_args()
    if args.worker:
        fn = worker_swaref if args.worker == "swaref" else worker_transformers
        extra = (args.dtype,) if args.worker == "swaref" else ()
        print(json.dumps(fn(args.dir, args.prompt, args.new, args.variant, args.threads, *extra)))
        return 0
    print(f"machine: {machine()}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (other processes skew every number)")
    with tempfile.TemporaryDirectory() as d:
        n = make_checkpoint(d, CONFIG)
        print(f"checkpoint: random MistralForCausalLM, {n / 1e6:.1f}M parameters, "
              f"{CONFIG['num_hidden_layers']} layers, d {CONFIG['hidden_size']}, Hq {CONFIG['num_attention_heads']}, "
              f"Hkv {CONFIG['num_key_value_heads']}, D {CONFIG['head_dim']}, W {CONFIG['sliding_window']}, "
              f"float32 (swaref weights {args.dtype}); prompt {args.prompt} tokens, {args.new} decoded, {args.threads} threads")
        results = {}
        for spec in args.engines.split(","):
            engine, variant = spec.split(":")
            results[spec] = run_worker(engine, variant, d, args)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("(memory in MiB: RSS after loading, peak RSS while loading, peak RSS while generating)")
    base = results.get("transformers:sdpa")
    hdr = (f"{'engine':22} {'prefill tok/s':>13} {'decode tok/s':>12} {'step@600 ms':>11} {'step@6000 ms':>12} "
           f"{'6000/600':>8} {'RSS loaded':>10} {'peak load':>9} {'peak run':>8}")
    print(hdr)
    print("-" * len(hdr))
    for spec, r in results.items():
        if r is None:
            print(f"{spec:22} failed")
            continue
        s = r["step_ms"]
        print(f"{spec:22} {r['prefill_tok_s']:13.1f} {r['decode_tok_s']:12.2f} {s['600']:11.2f} {s['6000']:12.2f} "
              f"{s['6000'] / s['600']:8.2f} {r['rss_loaded_mib']:10.0f} {r['peak_load_mib']:9.0f} {r['peak_rss_mib']:8.0f}")
    if base:
        print("\nratios vs transformers:sdpa (>1 = faster / more memory than transformers):")
        for spec, r in results.items():
            if r is None or spec == "transformers:sdpa":
                continue
            print(f"  {spec:22} prefill x{r['prefill_tok_s'] / base['prefill_tok_s']:.2f}, "
                  f"decode x{r['decode_tok_s'] / base['decode_tok_s']:.2f}, "
                  f"peak RSS generating x{r['peak_rss_mib'] / base['peak_rss_mib']:.2f}")
    for spec, r in results.items():
        if r and "cache_bytes" in r:
            print(f"{spec}: the caches hold {r['cache_bytes'] / 2**20:.1f} MiB per sequence at any position "
                  f"(W slots per layer)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
