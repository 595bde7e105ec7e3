"""End-to-end generation on the CPU: swaref vs transformers vs llama.cpp on one random checkpoint.

    python benchmarks/bench_generate.py [--threads 1,2] [--repeats 3] [--engines LIST] [--quick]
        [--llama-cpp-dir DIR] [--llama-bench PATH] [--dtype float32|bfloat16] [--positions 600,6000]

A random 124.7M-parameter Mistral (12 layers, d 768, 12 query / 4 KV heads of
64, FFN 2048, vocabulary 32,000, untied LM head, W = 512, float32) is built by
transformers and saved with save_pretrained to a temporary directory.  Every
engine runs in its own subprocess (so that each peak resident memory, VmHWM, is
its own), once per thread count and repeat; the engines' order is rotated from
one repeat to the next, and each number is the median over the repeats.  A run
loads the checkpoint, warms up, then measures, each on a fresh cache:

* prefill P for each P in --prefills (512 and 2,048): tokens per second of
  pushing a P-token prompt through the model (swaref: chunks of W;
  transformers: one forward; llama.cpp: batches of 512);
* decode N (128): greedy decoding of N tokens one at a time after a short
  prompt (--decode-after, 64), so every decoded position is below W, where
  window and full attention are the same computation (see llama.cpp below).

Beside every decode row: the weight-streaming limit, i.e. the weight bytes a
decode step reads (every weight matrix once; the embedding table contributes one
row, so it is left out) divided by the DRAM read rate that
benchmarks/bench_memory.py measures at the same thread count (run first, in its
own process), and the engine's share of that limit.

Engines (--engines, comma-separated ENGINE:VARIANT; one that cannot run is
skipped with the reason, never an error):

* swaref:cython, swaref:reference     swaref.models, this checkout, weights as --dtype says;
  swaref:cython-bf16 (or reference-bf16): bfloat16 weights (load_model(dtype="bfloat16"))
* transformers:sdpa, transformers:eager   MistralForCausalLM, float32 (crosscheck extra)
* llama.cpp:f32, llama.cpp:bf16, llama.cpp:q8_0 (append "-fa" for flash attention on,
  e.g. llama.cpp:f32-fa)   llama-cpp-python (the `llamacpp` extra, built from source)
  on the checkpoint converted to GGUF by the convert_hf_to_gguf.py of --llama-cpp-dir
  (a llama.cpp source tree: the llama-cpp-python sdist's vendor/llama.cpp).  Greedy
  decode through Llama.eval and the last token's logits, like the other engines.
* llama-bench:f32, llama-bench:bf16, llama-bench:q8_0    llama.cpp's own benchmark
  binary (--llama-bench), same GGUF files, `-r 1` per run; its decode test starts
  from an empty cache (positions 0..N-1) and it runs flash attention "auto".

llama.cpp's converter maps MistralForCausalLM to its `llama` architecture and
drops `sliding_window` (docs/model.md, "Interoperability: llama.cpp"), so the
converted model attends to every earlier key: the same as Mistral below W tokens,
more work (and other numbers) beyond.  Prefill 2,048 therefore does more
attention work in llama.cpp than in swaref and transformers; the agreement lines
at the end show it (last-token logits after each prefill against swaref's).

--quick: a tiny config (2 layers, d 128, W 64), prefills 64 and 256, decode 16,
one repeat, 1 thread, a 64 MiB read-rate buffer: for checking that it runs.
"""
import argparse
import importlib.metadata
import importlib.util
import inspect
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

CONFIG = dict(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
              num_attention_heads=12, num_key_value_heads=4, head_dim=64, sliding_window=512,
              rope_theta=10000.0, rms_norm_eps=1e-5, max_position_embeddings=8192, tie_word_embeddings=False)
QUICK_CONFIG = dict(CONFIG, vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=32, sliding_window=64)
DEFAULT_ENGINES = ("swaref:cython,swaref:cython-bf16,transformers:sdpa,llama.cpp:f32,llama.cpp:bf16,"
                   "llama-bench:f32,llama-bench:bf16,llama-bench:q8_0")
STEPS_AT_POSITION = 16
HERE = os.path.dirname(os.path.abspath(__file__))
# The user's environment, taken before anything here imports swaref, whose import sets
# GOMP_SPINCOUNT and OPENBLAS_THREAD_TIMEOUT where they are unset (swaref/__init__.py).
USER_ENV = dict(os.environ)


def engine_env(engine, **extra):
    """The environment of an engine's process: the user's, plus extra.  A swaref engine also gets
    the defaults `import swaref` sets where the user did not: its worker (this script) imports
    NumPy before swaref, and OpenBLAS reads OPENBLAS_THREAD_TIMEOUT when NumPy loads it, while
    `swaref generate` imports swaref first.  The other engines see the user's environment only."""
    env = dict(USER_ENV, **extra)
    if engine == "swaref":
        import swaref
        env.setdefault("GOMP_SPINCOUNT", swaref.GOMP_SPINCOUNT_DEFAULT)
        env.setdefault("OPENBLAS_THREAD_TIMEOUT", swaref.OPENBLAS_THREAD_TIMEOUT_DEFAULT)
    return env


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


def build_checkpoint(d, config):
    """make_checkpoint in a subprocess: the driver never imports torch, so that a child it starts
    (llama-bench, whose peak RSS is read from wait4's ru_maxrss, which counts the forked parent's
    pages before exec) starts small."""
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", "checkpoint", "--dir", d,
                          "--work", json.dumps(config)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"building the checkpoint failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------- workers
# Each worker runs in its own process and prints one JSON line.  `work` holds the
# lengths (prefills, decode, decode_after, positions); measure() is common to all.

def time_at_positions(new_cache, prefill, step, ids, positions):
    """Median seconds of one decode step at each of positions.

    One cache per position is prefilled up to it; then steps alternate between
    the caches, so drift (frequency, other processes) hits every position alike.
    """
    caches = {}
    for pos in positions:
        caches[pos] = new_cache()
        prefill(ids[:pos], caches[pos])
    times = {pos: [] for pos in positions}
    for i in range(STEPS_AT_POSITION):
        for pos in positions:
            t0 = time.perf_counter()
            step(ids[pos + i: pos + i + 1], caches[pos])
            times[pos].append(time.perf_counter() - t0)
    return {pos: float(np.median(t)) for pos, t in times.items()}


def measure(new_cache, prefill, step, ids, work, logits_dir=None, tag=""):
    """The common measurement: warm-up, prefill P for each P, decode N after a short prompt.

    new_cache() -> cache; prefill(tokens, cache) -> last-token logits [V] (NumPy);
    step(token, cache) -> the next token (greedy).  Every measurement starts
    from a fresh cache.  logits_dir: save each prefill's last logits there.
    """
    c = new_cache()                                    # warm-up: libraries, thread pools, allocators
    tok = int(np.argmax(prefill(ids[:16], c)))
    for _ in range(4):
        tok = step(tok, c)
    out = {"prefill_tok_s": {}}
    for P in work["prefills"]:
        c = new_cache()
        t0 = time.perf_counter()
        logits = prefill(ids[:P], c)
        out["prefill_tok_s"][str(P)] = P / (time.perf_counter() - t0)
        if logits_dir:
            np.save(os.path.join(logits_dir, f"{tag}-p{P}.npy"), np.asarray(logits, np.float32))
    c = new_cache()
    tok = int(np.argmax(prefill(ids[:work["decode_after"]], c)))
    n = work["decode"]
    t0 = time.perf_counter()
    for _ in range(n):
        tok = step(tok, c)
    out["decode_tok_s"] = n / (time.perf_counter() - t0)
    return out


def _ids(vocab, work):
    n = max(max(work["prefills"]), work["decode_after"] + work["decode"], max(work["positions"] or [0]) + 64)
    return np.random.default_rng(0).integers(3, vocab, n)


def swaref_variant(variant, dtype):
    """"cython" / "reference", optionally "-bf16" (bfloat16 weights whatever --dtype says) -> (backend, dtype)."""
    backend, _, suffix = variant.partition("-")
    return backend, ("bfloat16" if suffix == "bf16" else dtype)


def swaref_stream_bytes(model):
    """Bytes a decode step reads of swaref's weights: every layer tensor, the final norm, the LM head
    (bfloat16 weights are uint16 arrays: nbytes counts 2 per weight)."""
    from swaref.models.weights import LAYER_TENSORS
    n = sum(getattr(getattr(lw, name), "nbytes", 0) for lw in model.layers for name in LAYER_TENSORS)
    return n + model.final_norm.nbytes + model.lm_head.nbytes


def worker_swaref(d, work, variant, threads, logits_dir=None, tag="", dtype="float32"):
    from swaref import models as M
    from swaref.models import load_model
    backend, dtype = swaref_variant(variant, dtype)
    model = load_model(d, dtype=dtype)
    rss_loaded, peak_load = rss_mib(), peak_rss_mib()
    reset_peak_rss()
    ids = _ids(model.config.vocab_size, work)
    new_cache = lambda: M.new_caches(model, len(ids))  # noqa: E731
    prefill = lambda toks, c: M.prefill_prompt(model, toks, c, backend=backend, num_threads=threads)[-1]  # noqa: E731
    fwd = lambda toks, c: M.forward(model, toks, c, backend=backend, num_threads=threads, logits="last")  # noqa: E731
    step = lambda tok, c: int(np.argmax(fwd([tok], c)[-1]))  # noqa: E731
    res = measure(new_cache, prefill, step, ids, work, logits_dir, tag)
    if work["positions"]:
        at = time_at_positions(new_cache, lambda toks, c: prefill(toks, c), fwd, ids, work["positions"])
        res["step_ms"] = {str(p): 1e3 * t for p, t in at.items()}
    return dict(res, rss_loaded_mib=rss_loaded, peak_load_mib=peak_load, peak_rss_mib=peak_rss_mib(),
                weight_bytes_per_token=swaref_stream_bytes(model))


def worker_transformers(d, work, attn, threads, logits_dir=None, tag=""):
    import torch
    from transformers import DynamicCache, MistralForCausalLM
    torch.set_num_threads(threads)
    model = MistralForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation=attn).eval()
    rss_loaded, peak_load = rss_mib(), peak_rss_mib()
    reset_peak_rss()
    # transformers 5.x renamed forward's past_key_values to cache.
    cache_kwarg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    ids = torch.tensor(_ids(model.config.vocab_size, work))
    W = model.config.sliding_window

    def fwd(x, cache):
        return model(x[None], use_cache=True, logits_to_keep=1, **{cache_kwarg: cache}).logits[0, -1]

    # Streamed per token: every parameter but the embedding table (the LM head is untied here).
    streamed = sum(p.numel() * p.element_size() for name, p in model.named_parameters() if "embed_tokens" not in name)
    if model.config.tie_word_embeddings:
        streamed += model.lm_head.weight.numel() * model.lm_head.weight.element_size()
    with torch.inference_mode():
        new_cache = lambda: DynamicCache(config=model.config)  # noqa: E731
        prefill = lambda toks, c: fwd(toks, c).numpy()  # noqa: E731
        step = lambda tok, c: int(fwd(torch.tensor([tok]), c).argmax())  # noqa: E731
        res = measure(new_cache, prefill, step, ids, work, logits_dir, tag)
        if work["positions"]:
            # transformers would prefill 6,000 tokens in one forward; chunks of W keep its mask as small as swaref's.
            at = time_at_positions(new_cache, lambda toks, c: [fwd(toks[a:a + W], c) for a in range(0, len(toks), W)],
                                   fwd, ids, work["positions"])
            res["step_ms"] = {str(p): 1e3 * t for p, t in at.items()}
    return dict(res, rss_loaded_mib=rss_loaded, peak_load_mib=peak_load, peak_rss_mib=peak_rss_mib(),
                weight_bytes_per_token=streamed, torch=torch.__version__)


def worker_llama_cpp(gguf, work, variant, threads, logits_dir=None, tag=""):
    import llama_cpp
    n_ctx = max(max(work["prefills"]), work["decode_after"] + work["decode"]) + 16
    llm = llama_cpp.Llama(model_path=gguf, n_ctx=n_ctx, n_batch=512, n_ubatch=512, n_threads=threads,
                          n_threads_batch=threads, flash_attn=variant.endswith("-fa"), verbose=False)
    rss_loaded, peak_load = rss_mib(), peak_rss_mib()
    reset_peak_rss()
    n_vocab = llm.n_vocab()
    ids = [int(i) for i in _ids(n_vocab, work)]

    def last_logits():
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))

    def new_cache():
        llm.reset()                    # n_tokens = 0: the next eval removes every cached position first
        return llm

    def prefill(toks, c):
        c.eval(list(toks))
        return last_logits().copy()

    def step(tok, c):
        c.eval([tok])
        return int(np.argmax(last_logits()))

    res = measure(new_cache, prefill, step, ids, work, logits_dir, tag)
    return dict(res, rss_loaded_mib=rss_loaded, peak_load_mib=peak_load, peak_rss_mib=peak_rss_mib(),
                llama_cpp_python=llama_cpp.__version__, system_info=llama_cpp.llama_print_system_info().decode())


WORKERS = {"swaref": worker_swaref, "transformers": worker_transformers, "llama.cpp": worker_llama_cpp}


# ------------------------------------------------------------ llama.cpp side

def gguf_py_path(llama_dir):
    return os.path.join(llama_dir, "gguf-py")


def write_llama_tokenizer(d, vocab_size):
    """A Llama-2-layout tokenizer.json (<unk> <s> </s>, 256 byte tokens, filler pieces) of vocab_size tokens.

    The checkpoint is random and the engines are fed token ids; llama.cpp's converter
    still needs a vocabulary to write into the GGUF file, and this layout takes its
    plain Llama path (LlamaHfVocab: BPE with byte_fallback).
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{b:02X}>": 3 + b for b in range(256)})
    vocab["\u2581"] = len(vocab)
    while len(vocab) < vocab_size:
        vocab[f"\u2581w{len(vocab)}"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens([AddedToken(t, special=True) for t in ("<unk>", "<s>", "</s>")])
    tok.save(os.path.join(d, "tokenizer.json"))
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "LlamaTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
                   "unk_token": "<unk>", "add_bos_token": True, "add_eos_token": False}, f)


def llama_convert_problem(llama_dir):
    """Why the checkpoint cannot be converted to GGUF here, or None."""
    if not llama_dir:
        return ("no --llama-cpp-dir (a llama.cpp source tree with convert_hf_to_gguf.py and gguf-py, e.g. the "
                "llama-cpp-python 0.3.36 sdist's vendor/llama.cpp; or set LLAMA_CPP_DIR)")
    if not os.path.isfile(os.path.join(llama_dir, "convert_hf_to_gguf.py")):
        return f"{llama_dir}/convert_hf_to_gguf.py not found"
    if not os.path.isdir(gguf_py_path(llama_dir)) and importlib.util.find_spec("gguf") is None:
        return f"neither {gguf_py_path(llama_dir)} nor an installed gguf package"
    for mod, why in (("tokenizers", "to write the vocabulary the converter needs"),
                     ("sentencepiece", "convert_hf_to_gguf.py imports it for every Llama-family vocabulary")):
        if importlib.util.find_spec(mod) is None:
            return f"needs the {mod} package ({why})"
    return None


def convert_gguf(d, outtype, llama_dir, out_dir):
    """Convert checkpoint d to GGUF (outtype f32, bf16 or q8_0) with the tree's converter: path, or raises."""
    path = os.path.join(out_dir, f"model-{outtype}.gguf")
    if os.path.exists(path):
        return path
    # The converter goes with its own gguf-py (a released gguf may predate keys it writes): first on the path.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (gguf_py_path(llama_dir), os.environ.get("PYTHONPATH")) if p))
    out = subprocess.run([sys.executable, os.path.join(llama_dir, "convert_hf_to_gguf.py"), d, "--outtype", outtype,
                          "--outfile", path], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"convert_hf_to_gguf.py --outtype {outtype} failed:\n{out.stderr[-1500:]}")
    return path


def gguf_facts(path, llama_dir):
    """(bytes a decode step streams: every tensor but token_embd, unless the output reuses it;
    the metadata keys; general.architecture)."""
    sys.path.insert(0, gguf_py_path(llama_dir))
    try:
        from gguf import GGUFReader
    finally:
        sys.path.pop(0)
    r = GGUFReader(path)
    names = {t.name for t in r.tensors}
    streamed = sum(int(t.n_bytes) for t in r.tensors
                   if t.name != "token_embd.weight" or "output.weight" not in names)
    arch = r.fields["general.architecture"].contents() if "general.architecture" in r.fields else "?"
    return streamed, sorted(r.fields), arch


def run_llama_bench(binary, gguf, work, threads):
    """One llama-bench run (-r 1) of every prefill and the decode test: a result dict like a worker's."""
    cmd = [binary, "-m", gguf, "-t", str(threads), "-p", ",".join(map(str, work["prefills"])),
           "-n", str(work["decode"]), "-r", "1", "-o", "json"]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=engine_env("llama-bench"))
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{err.read()[-1500:]}")
        tests = json.loads(out.read())
    res = {"prefill_tok_s": {}, "peak_rss_mib": usage.ru_maxrss / 1024, "whole_process_rss": True}
    for t in tests:
        if t["n_gen"] == 0:
            res["prefill_tok_s"][str(t["n_prompt"])] = t["avg_ts"]
        elif t["n_prompt"] == 0:
            res["decode_tok_s"] = t["avg_ts"]
    res["llama_bench"] = {k: tests[0].get(k) for k in ("build_commit", "build_number", "flash_attn", "type_k",
                                                       "n_batch", "n_ubatch", "cpu_info")}
    return res


# --------------------------------------------------------------------- driver

def engine_problem(spec, args):
    """Why engine spec cannot run here, or None."""
    engine, _, variant = spec.partition(":")
    if engine == "swaref":
        if importlib.util.find_spec("swaref") is None:
            return "swaref is not importable"
        from swaref import SwarefError
        from swaref.models.generation import check_backend_available
        try:
            check_backend_available(variant.partition("-")[0])
        except SwarefError as e:
            return str(e)
        return None
    if engine == "transformers":
        return None   # needed for the checkpoint too: checked before anything runs
    if engine in ("llama.cpp", "llama-bench"):
        if variant.split("-")[0] not in ("f32", "bf16", "q8_0"):
            return f"unknown GGUF type {variant!r} (f32, bf16, q8_0)"
        if engine == "llama.cpp" and importlib.util.find_spec("llama_cpp") is None:
            return ("llama-cpp-python is not installed (pip install 'swaref[llamacpp]' builds it from source, "
                    "about 5 minutes)")
        if engine == "llama-bench" and not (args.llama_bench and os.access(args.llama_bench, os.X_OK)):
            return ("no llama-bench binary (--llama-bench PATH or LLAMA_BENCH; build the llama-bench target of "
                    "the llama.cpp tree with cmake)")
        return llama_convert_problem(args.llama_cpp_dir)
    return f"unknown engine {engine!r} (swaref, transformers, llama.cpp, llama-bench)"


def run_worker(spec, d, gguf, work, threads, logits_dir, llama_bench, dtype="float32"):
    engine, _, variant = spec.partition(":")
    t0 = time.perf_counter()
    if engine == "llama-bench":
        try:
            res = run_llama_bench(llama_bench, gguf, work, threads)
        except (RuntimeError, OSError, ValueError, KeyError) as e:
            print(f"{spec} failed: {e}", file=sys.stderr)
            return None
        res["wall_s"] = time.perf_counter() - t0
        return res
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", spec, "--dir", gguf or d,
           "--work", json.dumps(work), "--threads", str(threads), "--dtype", dtype]
    if logits_dir:
        cmd += ["--logits-dir", logits_dir]
    env = engine_env(engine, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        print(f"{spec} failed:\n{out.stderr[-2000:]}", file=sys.stderr)
        return None
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["wall_s"] = time.perf_counter() - t0
    return res


def read_rates(threads, mib, repeats):
    """{threads: GB/s} from benchmarks/bench_memory.py in its own process (BLAS at one thread there), or {}."""
    cmd = [sys.executable, os.path.join(HERE, "bench_memory.py"), "--json", "--threads", ",".join(map(str, threads)),
           "--mib", str(mib), "--repeats", str(repeats)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        print(f"bench_memory.py failed (no weight-streaming limit):\n{out.stderr[-1000:]}", file=sys.stderr)
        return {}, ""
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return {int(t): v for t, v in data["read_gb_s"].items()}, out.stdout


def machine():
    cpu = platform.processor() or "?"
    flags = []
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        cpu = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name"))
        flags = next(line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        pass
    blas = "?"
    try:
        from threadpoolctl import threadpool_info
        blas = ", ".join(f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')})"
                         for i in threadpool_info() if i.get("user_api") == "blas")
    except ImportError:
        from swaref._cpu import blas as numpy_blas
        blas = numpy_blas()
    versions = []
    for dist in ("swaref", "torch", "transformers", "llama_cpp_python"):
        try:
            versions.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    feats = ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags)
    return (f"{cpu} ({feats}), {os.cpu_count()} logical CPUs; Python {platform.python_version()}, "
            f"NumPy {np.__version__}, BLAS: {blas}; {', '.join(versions)}")


def median_result(runs):
    """Median of each number over the repeats (runs: list of result dicts, None for a failed run)."""
    runs = [r for r in runs if r]
    if not runs:
        return None
    med = lambda key: statistics.median(r[key] for r in runs)  # noqa: E731
    out = {"n": len(runs), "decode_tok_s": med("decode_tok_s"), "peak_rss_mib": med("peak_rss_mib"),
           "decode_all": [r["decode_tok_s"] for r in runs],
           "prefill_tok_s": {p: statistics.median(r["prefill_tok_s"][p] for r in runs)
                             for p in runs[0]["prefill_tok_s"]}}
    for key in ("weight_bytes_per_token", "whole_process_rss", "step_ms"):
        if key in runs[0]:
            out[key] = runs[0][key]
    return out


def print_tables(results, threads, work, rates):
    """One table per thread count, then every ratio."""
    P = [str(p) for p in work["prefills"]]
    for t in threads:
        rate = rates.get(t)
        print(f"\n## {t} thread(s); DRAM read rate {f'{rate:.1f} GB/s' if rate else 'not measured'} "
              f"(bench_memory.py); tok/s, median of the repeats")
        hdr = (f"{'engine':20} " + " ".join(f"{'prefill ' + p:>13}" for p in P) +
               f" {'decode ' + str(work['decode']):>11} {'MB/token':>9} {'limit tok/s':>11} {'share':>6} {'peak RSS':>9}")
        print(hdr)
        print("-" * len(hdr))
        for spec, by_t in results.items():
            r = by_t.get(t)
            if r is None:
                continue
            wb = r.get("weight_bytes_per_token")
            limit = rate * 1e9 / wb if (rate and wb) else None
            share = f"{r['decode_tok_s'] / limit:.0%}" if limit else "n/a"
            print(f"{spec:20} " + " ".join(f"{r['prefill_tok_s'][p]:13.1f}" for p in P) +
                  f" {r['decode_tok_s']:11.2f} {wb / 1e6 if wb else float('nan'):9.1f} "
                  f"{limit or float('nan'):11.1f} {share:>6} "
                  f"{r['peak_rss_mib']:8.0f}{'*' if r.get('whole_process_rss') else ' '}")
        spread = {s: by_t[t]["decode_all"] for s, by_t in results.items() if by_t.get(t)}
        print("decode tok/s of each repeat: " + "; ".join(f"{s} " + " ".join(f"{v:.1f}" for v in vals)
                                                           for s, vals in spread.items()))
    print("\npeak RSS in MiB: VmHWM after loading (the inference's own peak); * = the whole process, "
          "loading included (llama-bench)")
    print("MB/token: weight bytes a decode step reads (embedding table excluded); limit = read rate / MB/token")
    mine = [s for s in results if s.startswith("swaref:")]
    for t in threads:
        for a in mine:
            ra = results[a].get(t)
            if ra is None:
                continue
            for b, by_t in results.items():
                rb = by_t.get(t)
                if b == a or rb is None or (b in mine and mine.index(b) > mine.index(a)):
                    continue                   # between two swaref rows: the later one over the earlier only
                print(f"ratio {t} thread(s) {a} / {b}: " +
                      ", ".join(f"prefill {p} x{ra['prefill_tok_s'][p] / rb['prefill_tok_s'][p]:.2f}" for p in P) +
                      f", decode x{ra['decode_tok_s'] / rb['decode_tok_s']:.2f}, "
                      f"peak RSS x{ra['peak_rss_mib'] / rb['peak_rss_mib']:.2f}")


def print_agreement(logits_dir, specs, work, window):
    """Max |logit difference| of each engine's last-token logits after each prefill, against the first one's."""
    ref = specs[0]
    for spec in specs[1:]:
        parts = []
        for p in work["prefills"]:
            a, b = (os.path.join(logits_dir, f"{s}-p{p}.npy") for s in (ref, spec))
            if os.path.exists(a) and os.path.exists(b):
                diff = float(np.max(np.abs(np.load(a).astype(np.float64) - np.load(b))))
                parts.append(f"prefill {p} ({'<=' if p <= window else '>'} W) {diff:.3g}")
        if parts:
            print(f"max |last-token logit - {ref}'s|, {spec}: " + ", ".join(parts))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each engine per thread count; median (default 3)")
    ap.add_argument("--engines", default=DEFAULT_ENGINES)
    ap.add_argument("--prefills", default="512,2048", help="prompt lengths timed as prefill (default 512,2048)")
    ap.add_argument("--decode", type=int, default=128, help="tokens decoded one at a time (default 128)")
    ap.add_argument("--decode-after", type=int, default=64, help="prompt before the decode (default 64)")
    ap.add_argument("--positions", default="", help="also time single decode steps at these positions "
                    "(swaref, transformers), e.g. 600,6000: a step costs the same at both with a W-slot cache")
    ap.add_argument("--llama-cpp-dir", default=os.environ.get("LLAMA_CPP_DIR"),
                    help="llama.cpp source tree (convert_hf_to_gguf.py, gguf-py); default $LLAMA_CPP_DIR")
    ap.add_argument("--llama-bench", default=os.environ.get("LLAMA_BENCH") or shutil.which("llama-bench"),
                    help="llama-bench binary; default $LLAMA_BENCH or llama-bench on PATH")
    ap.add_argument("--read-mib", type=int, default=1024, help="bench_memory.py buffer (default 1024 MiB)")
    ap.add_argument("--quick", action="store_true", help="tiny config and lengths, 1 repeat, 1 thread")
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                    help="swaref's weight precision (load_model's dtype); the other engines stay float32 "
                         "(an engine swaref:cython-bf16 is bfloat16 whatever this says)")
    ap.add_argument("--worker")
    ap.add_argument("--dir")
    ap.add_argument("--work")
    ap.add_argument("--logits-dir")
    args = ap.parse_args()
    if args.worker == "checkpoint":       # torch stays out of the driver (see build_checkpoint)
        print(json.dumps(make_checkpoint(args.dir, json.loads(args.work))))
        return 0
    if args.worker:
        engine, _, variant = args.worker.partition(":")
        extra = {"dtype": args.dtype} if engine == "swaref" else {}
        res = WORKERS[engine](args.dir, json.loads(args.work), variant, int(args.threads), args.logits_dir,
                              args.worker, **extra)
        print(json.dumps(res))
        return 0
    config = QUICK_CONFIG if args.quick else CONFIG
    if args.quick:
        args.threads, args.repeats, args.read_mib = "1", 1, 64
        args.prefills, args.decode, args.decode_after = "64,256", 16, 16
    threads = [int(t) for t in args.threads.split(",")]
    work = dict(prefills=[int(p) for p in args.prefills.split(",")], decode=args.decode,
                decode_after=args.decode_after, positions=[int(p) for p in args.positions.split(",") if p])
    W = config["sliding_window"]
    print(f"machine: {machine()}")
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
        print("skipped: the checkpoint is built by transformers (pip install 'swaref[crosscheck]')")
        return 0
    if work["decode_after"] + work["decode"] > W:
        print(f"note: decode reaches position {work['decode_after'] + work['decode'] - 1} >= W = {W}: llama.cpp "
              f"(full attention after conversion) then attends to more keys than swaref and transformers")
    specs = []
    for spec in args.engines.split(","):
        why = engine_problem(spec, args)
        if why:
            print(f"{spec} skipped: {why}")
        else:
            specs.append(spec)
    rates, mem_out = read_rates(threads, args.read_mib, 3 if args.quick else 10)
    if mem_out:
        print("bench_memory.py:\n  | " + mem_out.strip().replace("\n", "\n  | "))
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (other processes skew every number)")
    with tempfile.TemporaryDirectory() as d, tempfile.TemporaryDirectory() as scratch:
        n = build_checkpoint(d, config)
        print(f"checkpoint: random MistralForCausalLM, {n / 1e6:.1f}M parameters, "
              f"{config['num_hidden_layers']} layers, d {config['hidden_size']}, Hq {config['num_attention_heads']}, "
              f"Hkv {config['num_key_value_heads']}, D {config['head_dim']}, FFN {config['intermediate_size']}, "
              f"vocab {config['vocab_size']}, W {W}, float32 (swaref weights {args.dtype} unless -bf16); prefills {work['prefills']}, decode {work['decode']} "
              f"after a {work['decode_after']}-token prompt; threads {threads}, {args.repeats} repeat(s)")
        ggufs, gguf_bytes = {}, {}
        for spec in list(specs):
            engine, _, variant = spec.partition(":")
            if engine not in ("llama.cpp", "llama-bench"):
                continue
            outtype = variant.split("-")[0]
            try:
                if not os.path.exists(os.path.join(d, "tokenizer.json")):
                    write_llama_tokenizer(d, config["vocab_size"])
                ggufs[spec] = convert_gguf(d, outtype, args.llama_cpp_dir, scratch)
                gguf_bytes[spec], keys, arch = gguf_facts(ggufs[spec], args.llama_cpp_dir)
            except (RuntimeError, OSError, ImportError, ValueError) as e:
                print(f"{spec} skipped: {e}")
                specs.remove(spec)
                continue
            if spec == next(s for s in specs if s.partition(":")[0] in ("llama.cpp", "llama-bench")):
                keys = [k for k in keys if not k.startswith("GGUF.")]      # the header's own fields aside
                window = [k for k in keys if k.endswith("sliding_window")]
                print(f"GGUF {outtype}: architecture {arch!r}, {len(keys)} metadata keys, sliding-window keys: {window or 'none'}"
                      + ("" if window else ": llama.cpp runs full attention on it"))
        logits_dir = os.path.join(scratch, "logits")
        os.makedirs(logits_dir)
        runs = {spec: {t: [] for t in threads} for spec in specs}
        for r in range(args.repeats):
            order = specs[r % len(specs):] + specs[:r % len(specs)] if specs else []
            for t in threads:
                for spec in order:
                    save = logits_dir if (r == 0 and t == threads[0]) else None
                    res = run_worker(spec, d, ggufs.get(spec), work, t, save, args.llama_bench, args.dtype)
                    if res is not None and spec in gguf_bytes:
                        res["weight_bytes_per_token"] = gguf_bytes[spec]
                    runs[spec][t].append(res)
                    print(f"  run {r + 1}/{args.repeats}, {t} thread(s), {spec}: " +
                          ("failed" if res is None else f"decode {res['decode_tok_s']:.1f} tok/s, "
                           f"{res['wall_s']:.0f} s"), flush=True)
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        shown = set()                      # what each llama.cpp build was compiled for, once per engine
        for spec in specs:
            engine = spec.partition(":")[0]
            info = next((r.get("system_info") or r.get("llama_bench") for r in sum(runs[spec].values(), []) if r),
                        None)
            if info and engine not in shown:
                shown.add(engine)
                print(f"{engine} build: {info}")
        results = {spec: {t: median_result(runs[spec][t]) for t in threads} for spec in specs}
        print_tables(results, threads, work, rates)
        print_agreement(logits_dir, [s for s in specs if not s.startswith("llama-bench")], work, W)
        for spec, by_t in results.items():
            for t, r in by_t.items():
                if r and "step_ms" in r:
                    print(f"{spec}, {t} thread(s): decode step " +
                          ", ".join(f"{v:.2f} ms at position {p}" for p, v in r["step_ms"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
