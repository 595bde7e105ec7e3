"""swaref generate: run a decoder-only model on the CPU with swaref's attention.

    swaref generate --model DIR --prompt TEXT [--max-new-tokens N] [--temperature T] [--top-k K]
                    [--top-p P] [--min-p M] [--stop STR ...] [--chat [--system TEXT]] [--json]
    swaref generate --model DIR --prompt-file PATH|-      # a file, or standard input
    swaref generate --model DIR --prompt-ids "1 415 2936" # token ids, tokenizer or not
    swaref generate --model DIR --batch-file PATH         # one prompt per line, generated as a batch
    swaref generate --tiny                                # random weights over the tutorial's words

Text streams to stdout as it is decoded (a batch prints each completion when
all are done; --json prints one JSON object per prompt); a progress bar
(stderr, on a terminal only) follows long prefills; the run ends with prefill
and decode speed and the cache memory.  Without a tokenizer.json text is
token ids ("1 415 2936") and ids come out.
"""
import argparse
import json
import os
import stat
import sys
import time

from .. import _validate as V
from ..errors import SwarefError


#: The tutorial's chunked-prefill sentence: the default prompt of ``--tiny``.
TINY_PROMPT = "Can you tell me who is the richest man in history"

LOGPROB_HELP = ("log-probability of each chosen token under the distribution it was drawn from: after "
                "temperature, top-k, top-p and min-p, renormalised; with greedy decoding (temperature 0), "
                "under the model's own softmax (temperature 1)")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows each default: as "(default: X)", or in words where it is None (or a flag)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


CHECKPOINT_DEFAULT = "default: the checkpoint's generation_config.json when it sets do_sample, else "


def add_arguments(p):
    p.formatter_class = _HelpFormatter
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", metavar="DIR", help="checkpoint directory: Hugging Face (config.json + safetensors) "
                                                    "or Mistral's native (params.json + consolidated.safetensors)")
    src.add_argument("--tiny", action="store_true",
                     help="a small random-weight model built in memory whose vocabulary is the tutorial's 16 "
                          "words (its output is random words)")
    prompt = p.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", metavar="TEXT",
                        help="prompt text (token ids separated by spaces when the model has no tokenizer.json); "
                             f"with --tiny the default is {TINY_PROMPT!r}; with --model and no prompt option, a "
                             "prompt piped or redirected to standard input is read")
    prompt.add_argument("--prompt-file", metavar="PATH",
                        help="read the prompt from a file ('-': standard input); one final newline is dropped")
    prompt.add_argument("--prompt-ids", metavar="IDS",
                        help="the prompt as token ids ('1 415 2936'), used as they are even when a tokenizer exists")
    prompt.add_argument("--batch-file", metavar="PATH",
                        help="one prompt per line (blank lines skipped), generated together as a batch")
    p.add_argument("--chat", action="store_true",
                   help="wrap the prompt as a user message in the checkpoint's chat template (tokenizer_config.json "
                        "'chat_template' or chat_template.jinja), rendered as transformers does; needs jinja2 "
                        "(pip install 'swaref[chat]')")
    p.add_argument("--system", metavar="TEXT", default=None, help="a system message before the prompt (with --chat)")
    p.add_argument("--max-new-tokens", type=int, default=64, metavar="N", help="tokens to generate per prompt, at most")
    p.add_argument("--chunk-size", type=int, default=None, metavar="C",
                   help="prefill chunk length (None: the smallest window W)")
    p.add_argument("--backend", choices=("cython", "reference"), default=None,
                   help="attention backend (None: cython where it is built, else the per-query reference)")
    p.add_argument("--threads", type=int, default=None, help="threads for the compiled backend (None: all cores)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed for sampling and for --tiny's weights (None: fresh randomness; --tiny uses 0)")
    p.add_argument("--temperature", type=float, default=None, metavar="T",
                   help=f"0 = greedy ({CHECKPOINT_DEFAULT}0, greedy, as transformers' generate)")
    p.add_argument("--top-k", type=int, default=None, metavar="K",
                   help=f"keep the K most likely tokens, 0 = off ({CHECKPOINT_DEFAULT}0)")
    p.add_argument("--top-p", type=float, default=None, metavar="P",
                   help=f"nucleus sampling, 1 = off ({CHECKPOINT_DEFAULT}1)")
    p.add_argument("--min-p", type=float, default=0.0, metavar="M",
                   help="keep tokens at least M times as likely as the most likely one (0 = off); temperature, "
                        "top-k, top-p and min-p apply in that order, as in transformers")
    p.add_argument("--stop", action="append", default=None, metavar="STR",
                   help="stop when the text contains STR (repeatable); the output ends before it")
    p.add_argument("--no-stop", action="store_true", help="do not stop at the end-of-sequence token")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object per prompt: text, token ids, logprobs (" + LOGPROB_HELP +
                        "), finish_reason (stop, eos or length), the stop string, prompt token ids")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="weight precision: bfloat16 keeps every matrix in bfloat16 (half the memory, about twice "
                        "the decode speed; a float32 checkpoint is rounded to nearest even), the rest float32")
    p.add_argument("--rope-theta", type=float, default=None,
                   help="override the checkpoint's RoPE base (needed for a params.json without rope_theta)")


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


def _isatty(stream):
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _stdin_has_data(stdin):
    """True when standard input is a pipe or a file (not a terminal, not absent): ``echo hi | swaref generate``."""
    try:
        mode = os.fstat(stdin.fileno()).st_mode
    except (AttributeError, ValueError, OSError):  # io.UnsupportedOperation is an OSError
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISREG(mode)


def _fmt_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024


def _read(path, stdin, what):
    if path == "-":
        return stdin.read()
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise SwarefError("argument", f"{what} {path!r}: {e.strerror or e}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SwarefError("argument", f"{what} {path!r} is not UTF-8 text: {e}") from None


def _drop_final_newline(text):
    return text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text


def _prompt_texts(args, stdin):
    """-> (list of (prompt text or None, the option it came from), whether they are token ids)."""
    if args.prompt_ids is not None:
        return [(args.prompt_ids, "--prompt-ids")], True
    if args.prompt is not None:
        return [(args.prompt, "--prompt")], False
    if args.prompt_file is not None:
        return [(_drop_final_newline(_read(args.prompt_file, stdin, "--prompt-file")), "--prompt-file")], False
    if args.batch_file is not None:
        lines = [ln.rstrip("\r") for ln in _read(args.batch_file, stdin, "--batch-file").split("\n")]
        prompts = [(ln, f"--batch-file line {i + 1}") for i, ln in enumerate(lines) if ln.strip()]
        if not prompts:
            raise SwarefError("argument", f"--batch-file {args.batch_file!r} holds no prompt (no non-blank line)")
        return prompts, False
    if args.tiny:  # never waits on standard input: --tiny has a default prompt
        return [(TINY_PROMPT, "--prompt")], False
    if _stdin_has_data(stdin):
        return [(_drop_final_newline(stdin.read()), "standard input")], False
    raise SwarefError("argument", "--model needs a prompt: --prompt, --prompt-file, --prompt-ids, --batch-file, "
                                  "or text on standard input")


def _load(args, err):
    from .text import TINY, load_model, tiny_model
    from .weights import model_as
    if args.tiny:
        seed = args.seed if args.seed is not None else 0
        model = tiny_model(seed)
        model.model = model_as(model.model, args.dtype)
        err.write(f"swaref generate --tiny: random weights (seed {seed}), {TINY['n_layers']} layers, windows "
                  f"{list(TINY['windows'])}, the tutorial's {TINY['vocab_size']} words as vocabulary; the output is "
                  f"noise (random words), this only exercises the pipeline.\n")
        return model
    return load_model(args.model, rope_theta=args.rope_theta, dtype=args.dtype)


def run(args, out=None, err=None, stdin=None):
    from . import generation as G
    from .sampling import SamplingParams
    from .text import check_stops, default_backend, parse_ids
    out = out or sys.stdout
    err = err or sys.stderr
    stdin = stdin or sys.stdin
    try:
        # Everything that can be checked without the model is checked before loading it.
        # The options given are checked now; those left out take the checkpoint's defaults once it is loaded.
        given = lambda v, off: off if v is None else v  # noqa: E731
        SamplingParams(given(args.temperature, 0.0), given(args.top_p, 1.0), args.seed, given(args.top_k, 0),
                       args.min_p)
        stops = check_stops(args.stop)
        V.check_int(args.max_new_tokens, "max_new_tokens", minimum=0)
        if args.system is not None and not args.chat:
            raise SwarefError("argument", "--system needs --chat")
        if args.chat and args.prompt_ids is not None:
            raise SwarefError("argument", "--chat takes text, not --prompt-ids")
        texts, are_ids = _prompt_texts(args, stdin)
        backend = args.backend if args.backend is not None else default_backend()
        G.check_backend_available(backend)
        model = _load(args, err)
        params = model.sampling_params(args.temperature, args.top_p, args.top_k, args.min_p, args.seed)
        prompts = [parse_ids(t, what) if are_ids else
                   model.prompt_ids(t, chat=args.chat, system=args.system, what=what) for t, what in texts]
    except SwarefError as e:  # only rejections: anything else is a bug and keeps its traceback
        err.write(f"swaref generate: {e}\n")
        return 2
    cfg = model.config
    batch = len(prompts) > 1
    stream = not batch and not args.json

    def on_text(b, piece):
        out.write(piece)
        out.flush()

    chunk = args.chunk_size if args.chunk_size is not None else G.default_chunk_size(cfg)
    progress = (_progress_bar(err, min_tokens=4 * chunk if chunk else 1 << 62)
                if _isatty(err) and isinstance(chunk, int) and chunk > 0 else None)
    lengths = sorted({len(p) for p in prompts})
    err.write(f"model: {model.model.n_params:,} parameters, {cfg.n_layers} layers, windows "
              f"{sorted(set(cfg.windows), key=lambda w: (w is None, w or 0))}, "
              f"{len(prompts)} prompt{'s' if batch else ''} of {'/'.join(map(str, lengths))} tokens, "
              f"backend {backend}, " + ("greedy" if params.temperature == 0 else
                                         f"sampling with temperature {params.temperature:g}, top-k {params.top_k}, "
                                         f"top-p {params.top_p:g}, min-p {params.min_p:g}") + "\n")
    try:
        done, res = model.complete(prompts, max_new_tokens=args.max_new_tokens, temperature=params.temperature,
                                   top_p=params.top_p, top_k=params.top_k, min_p=params.min_p, seed=params.seed,
                                   stop=stops, backend=backend, chunk_size=args.chunk_size, num_threads=args.threads,
                                   stop_on_eos=not args.no_stop, on_text=on_text if stream else None,
                                   progress=progress)
    except SwarefError as e:
        err.write(f"\nswaref generate: {e}\n")
        return 2
    if args.json:
        for b, (c, (text, _)) in enumerate(zip(done, texts)):
            out.write(json.dumps({"index": b, "prompt": None if are_ids else text, **c.to_dict()},
                                 ensure_ascii=False, allow_nan=False) + "\n")
    elif batch:
        for c in done:
            out.write(c.text + "\n")
    else:
        out.write("\n")
    out.flush()
    pre = res.prefill_tokens / res.prefill_seconds if res.prefill_seconds > 0 else float("inf")
    dec = res.decode_tokens / res.decode_seconds if res.decode_seconds > 0 else float("nan")
    reasons = sorted({c.finish_reason for c in done})
    ended = {"stop": "stopped at a stop string", "eos": "stopped at end-of-sequence", "length": ""}
    why = "; ".join(ended[r] for r in reasons if ended[r])
    err.write(f"prefill: {res.prefill_tokens} tokens in {res.prefill_seconds:.3f} s ({pre:,.1f} tok/s); "
              f"decode: {res.decode_tokens} tokens in {res.decode_seconds:.3f} s ({dec:,.1f} tok/s)"
              f"{'; ' + why if why else ''}\n")
    err.write(f"peak cache memory: {_fmt_bytes(res.cache_bytes)} ({cfg.n_layers} layer caches per sequence, "
              f"allocated once: min(W, prompt + new tokens) slots per sliding layer, prompt + new tokens per "
              f"full-attention layer)\n")
    return 0
