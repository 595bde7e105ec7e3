"""swaref generate: run a Mistral-architecture model on the CPU with swaref's attention.

    swaref generate --model DIR --prompt TEXT [--max-new-tokens N] [--chunk-size C]
                    [--backend reference|cython] [--seed S] [--temperature T] [--top-p P]
    swaref generate --tiny --prompt TEXT      # random weights, nothing downloaded: noise

Text streams to stdout as it is generated; a progress bar (stderr) follows
long prefills; the run ends with prefill and decode speed and the cache memory.
Without a tokenizer.json the prompt is token ids ("1 415 2936") and ids come out.
"""
import sys
import time

from ..errors import SwarefError


#: The tutorial's chunked-prefill sentence: the default prompt of ``--tiny``.
TINY_PROMPT = "Can you tell me who is the richest man in history"

#: The --tiny model: byte-level vocabulary, one sliding layer and one full-attention layer.
TINY = dict(vocab_size=256, hidden_size=64, intermediate_size=128, n_layers=2, n_heads=4, n_kv_heads=2,
            head_dim=16, windows=[8, None], rope_theta=10000.0, rms_norm_eps=1e-5)


def add_arguments(p):
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", metavar="DIR", help="checkpoint directory: Hugging Face (config.json + safetensors) "
                                                    "or Mistral's native (params.json + consolidated.safetensors)")
    src.add_argument("--tiny", action="store_true",
                     help="a small random-weight model built in memory (its output is noise)")
    p.add_argument("--prompt", default=None,
                   help="prompt text (or token ids separated by spaces when the model has no tokenizer.json); "
                        f"required with --model, defaults to {TINY_PROMPT!r} with --tiny")
    p.add_argument("--max-new-tokens", type=int, default=64, metavar="N")
    p.add_argument("--chunk-size", type=int, default=None, metavar="C",
                   help="prefill chunk length (default: the smallest window W)")
    p.add_argument("--backend", choices=("reference", "cython"), default="reference")
    p.add_argument("--threads", type=int, default=None, help="threads for the compiled backend")
    p.add_argument("--seed", type=int, default=None, help="seed for sampling (and for --tiny's weights)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 (default) = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--no-stop", action="store_true", help="do not stop at the end-of-sequence token")
    p.add_argument("--rope-theta", type=float, default=None,
                   help="override the checkpoint's RoPE base (needed for a params.json without rope_theta)")


class _ByteCodec:
    """The --tiny model's 'tokenizer': UTF-8 bytes are the token ids.

    Decoding shows printable ASCII as itself and any other byte as \\xNN, one
    byte at a time, so random output never breaks the terminal.
    """

    def encode(self, text):
        return list(text.encode("utf-8"))

    def decode(self, ids):
        return "".join(chr(b) if 32 <= b < 127 else f"\\x{b:02x}" for b in ids)


class _HFCodec:
    def __init__(self, tok):
        self.tok = tok

    def encode(self, text):
        return self.tok.encode(text).ids

    def decode(self, ids):
        return self.tok.decode(ids)


def _parse_ids(text):
    try:
        ids = [int(x) for x in text.replace(",", " ").split()]
    except ValueError:
        raise SwarefError("argument", "this model has no tokenizer.json: give --prompt as token ids separated "
                                      f"by spaces, got {text[:40]!r}") from None
    if not ids:
        raise SwarefError("argument", "--prompt holds no token ids")
    return ids


def _progress_bar(stream, min_tokens):
    """progress(done, total) drawing a bar on ``stream`` when the prompt has >= min_tokens tokens."""
    state = {"t0": time.perf_counter()}

    def progress(done, total):
        if total < min_tokens:
            return
        width = 30
        fill = int(width * done / total)
        rate = done / max(time.perf_counter() - state["t0"], 1e-9)
        stream.write(f"\rprefill [{'#' * fill}{'.' * (width - fill)}] {done}/{total} tokens, {rate:,.0f} tok/s")
        if done == total:
            stream.write("\n")
        stream.flush()

    return progress


def _fmt_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024


def _load(args, err):
    from .config import ModelConfig
    from .weights import random_model
    if args.tiny:
        seed = args.seed if args.seed is not None else 0
        cfg = ModelConfig(**TINY)
        err.write(f"swaref generate --tiny: random weights (seed {seed}), {cfg.n_layers} layers, windows "
                  f"{list(cfg.windows)}; the output is noise, this only exercises the pipeline.\n")
        return random_model(cfg, seed=seed), _ByteCodec()
    from .checkpoint import load_model, load_tokenizer
    model = load_model(args.model, rope_theta=args.rope_theta)
    tok = load_tokenizer(args.model)
    return model, (_HFCodec(tok) if tok is not None else None)


def run(args, out=None, err=None):
    from . import generation as G
    from .sampling import SamplingParams, make_sampler
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        if args.prompt is None:
            if not args.tiny:
                raise SwarefError("argument", "--prompt is required with --model")
            args.prompt = TINY_PROMPT
        params = SamplingParams(args.temperature, args.top_p, args.seed)
        model, codec = _load(args, err)
        prompt = codec.encode(args.prompt) if codec is not None else _parse_ids(args.prompt)
    except SwarefError as e:  # only rejections: anything else is a bug and keeps its traceback
        err.write(f"swaref generate: {e}\n")
        return 2
    cfg = model.config
    generated = []
    shown = [""]

    def on_token(b, tok):
        generated.append(tok)
        if codec is None:
            out.write(f"{tok} ")
        else:
            # Decode everything so far and print the new suffix; hold it back while the last
            # token ends half a character (decoded as U+FFFD until the rest arrives).
            text = codec.decode(generated)
            if not text.endswith("\ufffd"):
                out.write(text[len(shown[0]):])
                shown[0] = text
        out.flush()

    chunk = args.chunk_size if args.chunk_size is not None else G.default_chunk_size(cfg)
    progress = _progress_bar(err, min_tokens=4 * (chunk or len(prompt)) if chunk else 1 << 62)
    err.write(f"model: {model.n_params:,} parameters, {cfg.n_layers} layers, windows "
              f"{sorted(set(cfg.windows), key=lambda w: (w is None, w or 0))}, prompt {len(prompt)} tokens, "
              f"backend {args.backend}\n")
    try:
        res = G.generate(model, [prompt], max_new_tokens=args.max_new_tokens, sample=make_sampler(params),
                         chunk_size=args.chunk_size, backend=args.backend, num_threads=args.threads,
                         stop_on_eos=not args.no_stop, on_token=on_token, progress=progress)
    except SwarefError as e:
        err.write(f"\nswaref generate: {e}\n")
        return 2
    out.write("\n")
    out.flush()
    pre = res.prefill_tokens / res.prefill_seconds if res.prefill_seconds > 0 else float("inf")
    dec = res.decode_tokens / res.decode_seconds if res.decode_seconds > 0 else float("nan")
    err.write(f"prefill: {res.prefill_tokens} tokens in {res.prefill_seconds:.3f} s ({pre:,.1f} tok/s); "
              f"decode: {res.decode_tokens} tokens in {res.decode_seconds:.3f} s ({dec:,.1f} tok/s)"
              f"{'; stopped at end-of-sequence' if res.finished_by_eos[0] else ''}\n")
    err.write(f"peak cache memory: {_fmt_bytes(res.cache_bytes)} ({cfg.n_layers} layer caches, allocated "
              f"once: min(W, prompt + new tokens) slots per sliding layer, prompt + new tokens per "
              f"full-attention layer)\n")
    return 0
