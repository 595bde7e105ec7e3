"""Walk through the sliding-window tutorial in the terminal, on the library itself.

``swaref demo`` retells the tutorial (the score matrices before and after the
softmax, the receptive field, the rolling buffer cache, chunked prefill) with
its own sentences: one word = one token, seeded random embeddings, one head of
small dimension D.  Every number shown comes from a real call into swaref
(window_mask, attention, decode_step, prefill, receptive_field), and every
section ends with a check against an independent computation.

``swaref demo --plot DIR`` also writes the same pictures as PNG files, and one
more: the masks of the spec 1.1 window family side by side (sliding, kept sink
tokens, two-sided, chunked) on the tutorial's sentence (needs matplotlib:
``pip install swaref[plot]``).

The demo carries its own sentences; it never reads the tutorial file.
"""
import argparse
import os
import sys

import numpy as np

from .windows import Chunked, Sliding, TwoSided, kernel_params
from .conventions import to_flash_attention, to_hf_attention_chunk_size
from . import (RollingBufferCache, attention, cache_view, cache_write, decode_step,
               prefill, receptive_field, slot_of, window_mask)

#: The tutorial's sentences, one word = one token.
SENTENCE = "The cat is on a chair".split()
PROMPT = "Can you tell me who is the richest man in history".split()

#: The tutorial's windows: W = 3 for the attention matrices, W = 4 for the cache and prefill.
ATTENTION_WINDOW = 3
CACHE_WINDOW = 4
MAX_WINDOW = 6          # keeps every table inside 80 columns
WIDTH = 80
#: Sequence length and layer count of the receptive-field picture.
FIELD_LENGTH = 16
MAX_LAYERS = 8


# --------------------------------------------------------------------------
# The numbers: pure functions, shared by the text and the PNG renderers.
# --------------------------------------------------------------------------

def embed(words, dim, seed, salt):
    """Seeded toy projections of seeded random word embeddings.

    -> q, k, v: [T, 1, D] float64 (one head).  ``salt`` tells the two
    sentences apart so that they do not share vectors.
    """
    rng = np.random.default_rng([seed, salt])
    x = rng.standard_normal((len(words), dim))
    wq, wk, wv = (rng.standard_normal((dim, dim)) / np.sqrt(dim) for _ in range(3))
    return tuple((x @ w)[:, None, :] for w in (wq, wk, wv))


def score_matrices(q, k, v, window):
    """The tutorial's two matrices for one window, and the check against swaref.attention.

    q, k, v: [T, 1, D]  ->  dict with
    scores [T, T] (scale * q.k, -inf where masked), weights [T, T] (softmax
    rows, exactly 0 where masked), row_sums [T], and max_diff: the largest
    |weights @ V - swaref.attention(...)|.
    """
    T, _, D = q.shape
    pos = np.arange(T)
    mask = window_mask(pos, pos, window)
    raw = (q[:, 0] @ k[:, 0].T) / np.sqrt(D)
    scores = np.where(mask, raw, -np.inf)
    e = np.exp(scores - scores.max(axis=1, keepdims=True))   # exp(-inf) = 0: masked weight vanishes
    weights = e / e.sum(axis=1, keepdims=True)
    out = attention(q, k, v, window=window)
    max_diff = float(np.abs(weights @ v[:, 0] - out[:, 0]).max())
    return {"window": window, "mask": mask, "scores": scores, "weights": weights,
            "row_sums": weights.sum(axis=1), "max_diff": max_diff}


def reach_by_composition(window, n_layers, length):
    """Which inputs the last position depends on after 1..n_layers layers.

    -> bool [n_layers + 1, length], row L = positions reachable in L layers
    (row 0: only itself).  Computed by composing the one-layer mask with
    itself, independently of the formula in swaref.receptive_field.
    """
    pos = np.arange(length)
    one = window_mask(pos, pos, window).astype(np.int64)
    rows = [np.eye(length, dtype=np.int64)[-1]]
    for _ in range(n_layers):
        rows.append((rows[-1] @ one > 0).astype(np.int64))
    return np.array(rows, dtype=bool)


def receptive_field_table(window, length=FIELD_LENGTH):
    """Layers needed for the last of ``length`` positions to reach position 0, capped.

    -> dict with reach [L+1, length] (composition), formula [L+1] (earliest
    position by swaref.receptive_field) and agree (bool).
    """
    p = length - 1
    n_layers = MAX_LAYERS if window == 1 else min(MAX_LAYERS, -(-p // (window - 1)))
    reach = reach_by_composition(window, n_layers, length)
    formula = np.array([receptive_field(window, L, p) for L in range(n_layers + 1)])
    earliest = reach.argmax(axis=1)                 # first True in each row
    contiguous = all(reach[L, earliest[L]:].all() for L in range(n_layers + 1))
    return {"window": window, "length": length, "reach": reach, "formula": formula,
            "agree": bool(contiguous and (earliest == formula).all())}


def window_family(n, window):
    """The spec 1.1 window family on ``n`` positions, each with ``window`` keys at most:
    sliding, sliding + 1 kept sink token, two-sided, chunked.

    -> list of dicts: name, window, mask [n, n] (swaref.window_mask), engine (the same
    window in another engine's words), agree (the mask equals the compiled kernel's rule,
    swaref.windows.kernel_params, computed independently here).
    """
    left = (window - 1) // 2
    family = [("sliding window", window, f"window={window}"),
              ("kept sink tokens", Sliding(window, sink_tokens=1), f"Sliding({window}, sink_tokens=1)"),
              ("two-sided (encoders)", TwoSided(left, window - 1 - left), f"TwoSided({left}, {window - 1 - left})"),
              ("chunked (Llama 4)", Chunked(window), f"Chunked({window})")]
    pos = np.arange(n)
    out = []
    engines = [f"FlashAttention window_size={to_flash_attention(window)}, causal",
               f"StreamingLLM: token 0 + the last {window}",
               f"FlashAttention window_size={to_flash_attention(family[2][1])}",
               f"Llama 4 attention_chunk_size={to_hf_attention_chunk_size(family[3][1])}"]
    for (name, w, spelled), engine in zip(family, engines):
        mask = window_mask(pos, pos, w)
        out.append({"name": name, "window": w, "spelled": spelled, "mask": mask, "engine": engine,
                    "agree": bool(np.array_equal(mask, _kernel_rule_mask(w, n)))})
    return out


def _kernel_rule_mask(window, n):
    """Visibility by the kernel's four parameters (swaref.windows.kernel_params), pair by pair."""
    left, right, chunk, sinks = kernel_params(window)
    m = np.zeros((n, n), dtype=bool)
    for p in range(n):
        lo = max(0, p - left if left >= 0 else 0, (p // chunk) * chunk if chunk else 0)
        hi = p + right if right >= 0 else n - 1
        for j in range(n):
            m[p, j] = (j < sinks and j <= p) or lo <= j <= hi
    return m


def rolling_buffer_steps(words, q, k, v, window):
    """Decode ``words`` one token at a time through a real RollingBufferCache.

    -> (steps, max_diff).  Each step: word, position, written slot, the
    overwritten position (or -1), slot positions after the write, the next slot.
    max_diff compares the decoded outputs with swaref.attention over the whole
    sentence.
    """
    cache = RollingBufferCache(window, 1, q.shape[2], dtype=q.dtype)
    steps, outs = [], []
    for p, word in enumerate(words):
        slot = int(slot_of(p, cache.capacity))
        overwritten = int(cache.positions[slot])
        outs.append(decode_step(q[p:p + 1], k[p:p + 1], v[p:p + 1], cache))
        steps.append({"word": word, "position": p, "slot": slot, "overwritten": overwritten,
                      "slots": cache.positions.copy(),
                      "next_slot": int(slot_of(cache.next_position, cache.capacity))})
    full = attention(q, k, v, window=window)
    return steps, float(np.abs(np.concatenate(outs) - full).max())


def chunked_prefill_steps(words, q, k, v, window, chunk_size=None):
    """Prefill ``words`` one chunk per swaref.prefill call on one cache.

    -> (chunks, max_diff).  Each chunk: query positions, key positions
    (cache in time order, then chunk), how many of them come from the cache,
    the window_mask on those positions, the slot positions afterwards and the
    cache positions that writing before attending would have destroyed while
    the chunk still needs them.  max_diff compares the concatenated chunk
    outputs with one-shot swaref.attention over the whole prompt.
    """
    chunk_size = window if chunk_size is None else chunk_size
    cache = RollingBufferCache(window, 1, q.shape[2], dtype=q.dtype)
    chunks, outs = [], []
    for a in range(0, len(words), chunk_size):
        sl = slice(a, min(a + chunk_size, len(words)))
        q_pos = np.arange(sl.start, sl.stop)
        cache_pos = cache_view(cache)[2]
        k_pos = np.concatenate([cache_pos, q_pos])
        mask = window_mask(q_pos, k_pos, window)
        lost = _lost_if_written_first(cache, k[sl], v[sl], sl.start, mask[:, :len(cache_pos)], cache_pos)
        outs.append(prefill(q[sl], k[sl], v[sl], cache, chunk_size=sl.stop - sl.start))
        chunks.append({"q_pos": q_pos, "k_pos": k_pos, "n_cache": len(cache_pos), "mask": mask,
                       "slots": cache.positions.copy(), "lost": lost})
    full = attention(q, k, v, window=window)
    return chunks, float(np.abs(np.concatenate(outs) - full).max())


def _lost_if_written_first(cache, k, v, start, cache_mask, cache_pos):
    """Cached positions the chunk's queries need but a write-first order would overwrite."""
    trial = cache.copy()
    cache_write(trial, k, v, start)
    kept = set(trial.positions.tolist())
    needed = cache_pos[cache_mask.any(axis=0)]
    return [int(p) for p in needed if p not in kept]


# --------------------------------------------------------------------------
# Text rendering: every line fits in WIDTH columns.
# --------------------------------------------------------------------------

def _grid(row_labels, col_labels, cells, indent=2, sep_after=None, tail=None,
          right=False, groups=None):
    """Lines of a labelled table; columns shrink (labels truncate) to fit WIDTH.

    cells: rows of strings.  sep_after: draw '|' before that column.
    tail: strings appended to the header (tail[0]) and to each row.
    right: right-align (numbers).  groups: names written above the columns
    before and after the separator.
    """
    rw = max(len(s) for s in row_labels) + 2
    ncol = len(col_labels)
    extra = 2 if sep_after is not None else 0
    tail_w = max(len(t) for t in tail) if tail else 0
    need = max(max(len(c) for c in col_labels), max(len(c) for r in cells for c in r)) + (2 if right else 1)
    room = (WIDTH - indent - rw - extra - tail_w) // max(ncol, 1)
    cw = max(3, min(need, room))

    def cell(s):
        s = s[:cw - 1]
        return s.rjust(cw - 1) + " " if right else s.ljust(cw)

    def line(label, items, end=""):
        parts = []
        for j, s in enumerate(items):
            if sep_after is not None and j == sep_after:
                parts.append("| ")
            parts.append(cell(s))
        return (" " * indent + label.ljust(rw) + "".join(parts) + end).rstrip()

    out = []
    if groups and sep_after is not None:
        left = groups[0].ljust(cw * sep_after)
        out.append((" " * (indent + rw) + left + "| " + groups[1]).rstrip())
    out.append(line("", col_labels, tail[0] if tail else ""))
    for i, (lab, row) in enumerate(zip(row_labels, cells)):
        out.append(line(lab, row, tail[i + 1] if tail else ""))
    return out


def _fmt_score(x):
    return "-inf" if np.isneginf(x) else f"{x:.2f}"


def _fmt_weight(x, visible):
    return f"{x:.2f}" if visible else "0"


def _words(words, positions):
    return " ".join(words[p] for p in positions)


def _heading(n, title):
    text = f"{n}. {title}"
    return ["", text, "=" * len(text)]


def text_scores(words, causal, swa, dim):
    W = swa["window"]
    lines = _heading(1, f"Attention scores: causal vs sliding window (W = {W})")
    lines += [f"Sentence: \"{' '.join(words)}\", one word = one token, D = {dim}.",
              "Scores are q.k / sqrt(D).  A masked key gets -inf before the softmax,",
              "so after it the key's weight is exactly 0 and each row still sums to 1."]
    for name, m in (("Causal", causal), (f"Sliding window, W = {W}", swa)):
        lines += ["", f"{name}: scores before the softmax (row = query, column = key)"]
        lines += _grid(words, words, [[_fmt_score(x) for x in r] for r in m["scores"]], right=True)
        lines += ["", f"{name}: weights after the softmax"]
        tail = ["  row sum"] + [f"  {s:.6f}" for s in m["row_sums"]]
        lines += _grid(words, words, [[_fmt_weight(x, vis) for x, vis in zip(r, mr)]
                                      for r, mr in zip(m["weights"], m["mask"])],
                       tail=tail, right=True)
    last = len(words) - 1
    seen = np.nonzero(swa["mask"][last])[0]
    lines += ["", f"With W = {W} the last token \"{words[last]}\" sees {len(seen)} tokens: "
                  f"{_words(words, seen)}.",
              f"The first {W} rows match the causal ones: the window only bites once a",
              f"query has more than W - 1 = {W - 1} tokens before it.",
              f"Check: weights @ V vs swaref.attention: max |difference| = "
              f"{max(causal['max_diff'], swa['max_diff']):.1e}"]
    return lines


def text_receptive_field(words, field):
    W = field["window"]
    lines = _heading(2, f"The receptive field grows by W - 1 = {W - 1} per layer")
    lines += ["Each layer lets a token see W - 1 earlier tokens, but those tokens already",
              "carry what they saw one layer below: after L layers position p depends on",
              "positions >= p - L * (W - 1)  (swaref.receptive_field): the paper's",
              "\"W x L\" reach, though no single query looks back more than W - 1.", ""]
    p = len(words) - 1
    for L in range(1, 4):
        first = receptive_field(W, L, p)
        lines.append(f"  \"{words[p]}\" after {L} layer{'s' if L > 1 else ' '}: "
                     f"{_words(words, range(first, p + 1))}")
    n = field["length"]
    lines += ["", f"The last of {n} positions (# = it depends on that input):", ""]
    lines.append("  position " + "".join(f"{j % 10:<2}" for j in range(n))
                 + "   from")
    for L, row in enumerate(field["reach"]):
        marks = "".join(("# " if r else ". ") for r in row)
        lines.append(f"  layer {L:<3}" + marks + f"  {field['formula'][L]:>3}")
    lines += ["", "Check: composing the one-layer mask L times gives the same first position",
              f"as the formula: {'yes' if field['agree'] else 'NO'}"]
    return lines


def text_rolling_buffer(words, steps, max_diff, window):
    lines = _heading(3, f"The rolling buffer cache (W = {window} slot{'s' if window > 1 else ''})")
    lines += [f"Decoding keeps only the last W keys: position p goes to slot p mod {window}.",
              "Each step writes the new token, then attends (it must see itself, and",
              "the slot it overwrites held p - W, just outside its window).",
              "* marks the slot just written; 'next' is the write pointer.", ""]
    cw = max(len(w) for w in words) + 2            # room for the '*'

    def row(tok, word, p, slot, cells, end=""):
        return f"  {tok:>3}  {word:<7} {p:>2}  {slot:>4}  " + "".join(f"| {c:<{cw}}" for c in cells) + "|" + end

    lines.append(row("tok", "word", "p", "slot", [f"slot {s}" for s in range(window)]))
    for st in steps:
        cells = [(words[pos] if pos >= 0 else ".") + ("*" if s == st["slot"] else "")
                 for s, pos in enumerate(st["slots"])]
        lines.append(row(st["position"] + 1, st["word"], st["position"], st["slot"], cells,
                         f" next {st['next_slot']}"))
    for st in steps:
        if st["overwritten"] >= 0:
            lines += ["", f"Token {st['position'] + 1} \"{st['word']}\" (position {st['position']}) "
                          f"went to slot {st['position']} mod {window} = {st['slot']},",
                      f"replacing \"{words[st['overwritten']]}\" (position {st['overwritten']}): "
                      "the buffer wrapped around."]
            break
    slots = [p for p in steps[-1]["slots"] if p >= 0]
    if slots != sorted(slots):
        lines += [f"The slots are now out of time order; in time order they read: "
                  f"{_words(words, sorted(slots))}.",
                  "Attention only needs the set of (position, key, value), so order is harmless."]
    lines += [f"Check: token-by-token decode vs swaref.attention: max |difference| = {max_diff:.1e}"]
    return lines


def text_prefill(words, chunks, max_diff, window):
    lines = _heading(4, f"Chunked prefill (W = {window}, chunks of {window} "
                        f"token{'s' if window > 1 else ''})")
    lines += [f"Prompt: \"{' '.join(words)}\" ({len(words)} tokens).",
              "Per chunk: queries = the chunk; keys = [cache in time order] + [chunk];",
              "attend first, THEN write the chunk's last min(len, W) tokens to the cache.",
              "Mask: x = visible (p - W < j <= p), . = masked."]
    for n, c in enumerate(chunks, 1):
        q_pos, k_pos, nc = c["q_pos"], c["k_pos"], c["n_cache"]
        cache_words = f"[{_words(words, k_pos[:nc])}]" if nc else "(empty)"
        lines += ["", f"Chunk {n} of {len(chunks)}: positions {q_pos[0]}..{q_pos[-1]}",
                  f"  queries: {_words(words, q_pos)}",
                  f"  keys   : cache {cache_words} + chunk [{_words(words, q_pos)}]", ""]
        cols = [words[j] for j in k_pos]
        cells = [["x" if m else "." for m in row] for row in c["mask"]]
        lines += _grid([words[p] for p in q_pos], cols, cells, indent=4,
                       sep_after=nc if nc else None, groups=("cache", "chunk"))
        lines.append("")
        qw = max(len(words[p]) for p in q_pos) + 2
        for p, row in zip(q_pos, c["mask"]):
            lines.append(f"  {chr(34) + words[p] + chr(34):<{qw}} sees  {_words(words, k_pos[row])}")
        if c["lost"]:
            lines.append(f"  (writing the chunk before attending would have overwritten "
                         f"[{_words(words, c['lost'])}], which these queries need)")
        order = sorted(p for p in c["slots"] if p >= 0)
        lines.append(f"  cache after: slots [{' | '.join(words[p] if p >= 0 else '.' for p in c['slots'])}]"
                     f" = {_words(words, order)}")
    return lines


def text_check(max_diff):
    status = "OK" if max_diff <= 1e-12 else "MISMATCH"
    return ["", f"Check: chunked prefill == one-shot attention: max |difference| = "
                f"{max_diff:.1e}  {status}"]


def _wrap(lines):
    """Split any line longer than WIDTH at its last space (prose only)."""
    out = []
    for line in lines:
        while len(line) > WIDTH:
            cut = line.rfind(" ", 0, WIDTH + 1)
            if cut <= 0:
                break
            indent = len(line) - len(line.lstrip())
            out.append(line[:cut].rstrip())
            line = " " * (indent + 2) + line[cut + 1:]
        out.append(line)
    return out


# --------------------------------------------------------------------------
# The whole walkthrough.
# --------------------------------------------------------------------------

def compute(seed=0, dim=4, window=None):
    """Every number the demo shows, as a dict (text and PNG renderers read it)."""
    aw = ATTENTION_WINDOW if window is None else window
    cw = CACHE_WINDOW if window is None else window
    q1, k1, v1 = embed(SENTENCE, dim, seed, salt=1)
    q2, k2, v2 = embed(PROMPT, dim, seed, salt=2)
    steps, decode_diff = rolling_buffer_steps(SENTENCE, q1, k1, v1, cw)
    chunks, prefill_diff = chunked_prefill_steps(PROMPT, q2, k2, v2, cw)
    return {
        "seed": seed, "dim": dim, "attention_window": aw, "cache_window": cw,
        "causal": score_matrices(q1, k1, v1, None),
        "swa": score_matrices(q1, k1, v1, aw),
        "field": receptive_field_table(aw),
        "steps": steps, "decode_diff": decode_diff,
        "chunks": chunks, "prefill_diff": prefill_diff,
        "family": window_family(len(SENTENCE), aw),
    }


def render_text(r):
    """The walkthrough as a list of lines, none longer than WIDTH."""
    lines = ["swaref demo: sliding-window attention, step by step",
             f"(one word = one token, one head, D = {r['dim']}, random embeddings, seed {r['seed']};",
             " every number below comes from a call into swaref)",
             "Try also: swaref demo --window 2, --seed 1, --dim 8, --plot DIR"]
    lines += text_scores(SENTENCE, r["causal"], r["swa"], r["dim"])
    lines += text_receptive_field(SENTENCE, r["field"])
    lines += text_rolling_buffer(SENTENCE, r["steps"], r["decode_diff"], r["cache_window"])
    lines += text_prefill(PROMPT, r["chunks"], r["prefill_diff"], r["cache_window"])
    lines += text_check(r["prefill_diff"])
    return _wrap(lines)


# --------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------

def _int_in(lo, hi, what, why=""):
    """An argparse type: an integer in lo..hi, else a message naming what was expected."""
    def parse(s):
        try:
            n = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {s!r}") from None
        if not lo <= n <= hi:
            raise argparse.ArgumentTypeError(f"expected {what} in {lo}..{hi}{why}, got {n}")
        return n
    return parse


_window_arg = _int_in(1, MAX_WINDOW, "a window", " (to fit 80 columns)")
_dim_arg = _int_in(1, 256, "a head dimension")


def add_arguments(parser):
    parser.add_argument("--plot", metavar="DIR",
                        help="also write the figures as PNG files into DIR (needs matplotlib)")
    parser.add_argument("--window", type=_window_arg, metavar="W",
                        help=f"use this window everywhere (default: the tutorial's W = "
                             f"{ATTENTION_WINDOW} for the scores, {CACHE_WINDOW} for cache and prefill)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random embeddings (default 0)")
    parser.add_argument("--dim", type=_dim_arg, default=4, metavar="D",
                        help="head dimension of the toy embeddings (default 4)")


def run(args):
    plt = None
    if args.plot:
        # Fail before printing anything, so the message is not lost in the walkthrough.
        from .demo_plot import PlotUnavailable, plot_all, pyplot
        try:
            plt = pyplot()
        except PlotUnavailable as e:
            print(f"swaref demo: {e}", file=sys.stderr)
            return 3
        try:
            os.makedirs(args.plot, exist_ok=True)
        except OSError as e:
            print(f"swaref demo: cannot create the figure folder --plot {args.plot!r}: {e}",
                  file=sys.stderr)
            return 3
    r = compute(seed=args.seed, dim=args.dim, window=args.window)
    try:
        print("\n".join(render_text(r)), flush=True)
    except BrokenPipeError:
        # `swaref demo | head` closed the pipe: not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    if plt is not None:
        paths = plot_all(r, args.plot, plt)
        print(f"\nFigures written to {os.path.abspath(args.plot)}:")
        for p in paths:
            print(f"  {os.path.basename(p)}")
    return 0 if r["prefill_diff"] <= 1e-12 and r["decode_diff"] <= 1e-12 else 1
