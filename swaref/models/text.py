"""Text in, text out: tokenizers, chat templates, incremental decoding, stop strings, and
``load_model(DIR)`` -> ``TextModel`` whose ``generate("text")`` returns text.

    import swaref
    model = swaref.load_model("path/to/checkpoint")        # a TextModel
    print(model.generate("The capital of France is", max_new_tokens=16))
    model.generate(["first prompt", "second prompt"], temperature=0.7, seed=1)   # a batch -> list of str
    model.generate("Hi", chat=True, system="Be brief.", stop=["\\n\\n"])
    model.complete(...)          # Completion objects: text, token ids, log-probabilities, finish reason
    model.generate_ids([[1, 415, 2936]], max_new_tokens=8)   # the token-id level (GenerationResult)
    model.model                  # the weights (swaref.models.Model) for generation.generate and friends

Pieces, each usable alone:

* tokenizers: ``HFTokenizer`` (a checkpoint's tokenizer.json, through the ``tokenizers``
  package), ``WordTokenizer`` (the tutorial's words, for ``--tiny``), ``IdTokenizer`` (a model
  without a tokenizer: token ids written as numbers);
* ``IncrementalDecoder``: streamed text decoded from a short window of recent tokens, not from
  every token so far (O(1) per token, not O(n));
* ``StopMatcher``: ends a sequence at the first stop string, holding back text that may be the
  start of one, so the stream never shows a stop string;
* chat templates (``read_chat_template``, ``render_chat``, in ``chat.py``): rendered as
  transformers' ``apply_chat_template`` renders them, in jinja2's immutable sandbox (the
  ``chat`` extra).

Nothing here imports ``tokenizers`` or ``jinja2`` until they are needed.
"""
import os
from dataclasses import dataclass, field

from .. import _validate as V
from ..errors import SwarefError, SwarefTypeError
from .chat import read_chat_template, read_special_tokens, render_chat

#: The tutorial's two sentences ("The cat is on a chair", "Can you tell me who is the richest man
#: in history"): ``--tiny``'s whole vocabulary, one word = one token, in order of first appearance.
TUTORIAL_WORDS = ("The", "cat", "is", "on", "a", "chair", "Can", "you", "tell", "me", "who", "the",
                  "richest", "man", "in", "history")

#: Tokens an incremental decoder waits for a character to complete (UTF-8 needs at most 4 bytes).
MAX_PENDING_TOKENS = 8


# ------------------------------------------------------------------ tokenizers

class WordTokenizer:
    """Words separated by whitespace, one token each, from a fixed vocabulary (``--tiny``'s).

    A word outside the vocabulary is refused (SwarefError naming ``what``), so
    every token shown is a readable word.
    """

    def __init__(self, words=TUTORIAL_WORDS):
        self.words = tuple(words)
        self.ids = {w: i for i, w in enumerate(self.words)}

    @property
    def vocab_size(self):
        return len(self.words)

    def encode(self, text, add_special_tokens=True, what="the prompt"):
        out = []
        for w in text.split():
            if w not in self.ids:
                raise SwarefError("argument", f"{what}: {w!r} is not in --tiny's vocabulary, the tutorial's "
                                              f"{len(self.words)} words: {' '.join(self.words)}")
            out.append(self.ids[w])
        return out

    def decode(self, ids):
        return " ".join(self.words[i] for i in ids)

    def incremental(self):
        return _JoinDecoder(lambda i: self.words[i])


class IdTokenizer:
    """A model without a tokenizer: text is token ids written as numbers ("1 415 2936")."""

    def encode(self, text, add_special_tokens=True, what="the prompt"):
        return parse_ids(text, what, hint=" (this model has no tokenizer.json: text is token ids)")

    def decode(self, ids):
        return " ".join(str(int(i)) for i in ids)

    def incremental(self):
        return _JoinDecoder(lambda i: str(int(i)))


class _JoinDecoder:
    """Incremental decoding for tokenizers whose tokens are words joined by single spaces."""

    def __init__(self, word):
        self.word, self.n = word, 0

    def step(self, tok):
        self.n += 1
        return (" " if self.n > 1 else "") + self.word(tok)

    def flush(self):
        return ""


class HFTokenizer:
    """A ``tokenizers.Tokenizer`` (a checkpoint's tokenizer.json).

    ``encode(text)`` adds the tokenizer's special tokens (its BOS, as
    transformers' ``tokenizer(text)`` does); a rendered chat is encoded without
    them (the template writes its own, as ``apply_chat_template`` does).
    ``decode`` skips special tokens.
    """

    def __init__(self, tok):
        self.tok = tok

    @property
    def vocab_size(self):
        return self.tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text, add_special_tokens=True, what="the prompt"):
        return list(self.tok.encode(text, add_special_tokens=add_special_tokens).ids)

    def decode(self, ids):
        return self.tok.decode([int(i) for i in ids])

    def incremental(self):
        return IncrementalDecoder(self.decode)


class IncrementalDecoder:
    """Streamed decoding: ``step(token) -> new text`` (possibly ""), ``flush() -> the rest``.

    The text of a token can depend on its neighbours (SentencePiece drops the
    space of a sequence's first word; a byte-level token may hold half a
    character), so a token's text is read as decode(window + token) minus
    decode(window), with a window of the last few tokens, and is held back while
    it ends in an incomplete character (U+FFFD) for up to MAX_PENDING_TOKENS
    tokens.  Each step decodes a few tokens, not all so far (the algorithm of
    Hugging Face text-generation-inference and vLLM).  The pieces joined equal
    decode(all tokens) for the tokenizers tested (byte-level BPE with multi-byte
    characters, SentencePiece-style Metaspace, Llama 2's byte fallback,
    WordPiece), as long as the tokens spell valid UTF-8: invalid bytes become
    U+FFFD in groups that depend on which bytes are decoded together.
    """

    def __init__(self, decode):
        self.decode = decode
        self.ids = []
        self.prefix = 0   # the window starts here
        self.read = 0     # tokens before this were emitted

    def step(self, tok):
        self.ids.append(int(tok))
        prefix_text = self.decode(self.ids[self.prefix:self.read])
        new_text = self.decode(self.ids[self.prefix:])
        pending = len(self.ids) - self.read
        # A run of tokens that decode to nothing (skipped special tokens) must not grow the window
        # without bound: past 4 * MAX_PENDING_TOKENS it moves on anyway.
        stale = len(self.ids) - self.prefix > 4 * MAX_PENDING_TOKENS
        if stale or len(new_text) > len(prefix_text) and (not new_text.endswith("\ufffd")
                                                          or pending >= MAX_PENDING_TOKENS):
            self.prefix, self.read = self.read, len(self.ids)
            return new_text[len(prefix_text):]
        return ""

    def flush(self):
        if self.read == len(self.ids):
            return ""
        prefix_text = self.decode(self.ids[self.prefix:self.read])
        new_text = self.decode(self.ids[self.prefix:])
        self.prefix, self.read = self.read, len(self.ids)
        return new_text[len(prefix_text):]


def parse_ids(text, what="--prompt-ids", hint=""):
    """'1 415, 2936' -> [1, 415, 2936] (ints >= 0 separated by spaces or commas)."""
    parts = text.replace(",", " ").split()
    if not parts:
        raise SwarefError("argument", f"{what} holds no token ids{hint}")
    ids = []
    for x in parts:
        try:
            ids.append(int(x))
        except ValueError:
            raise SwarefError("argument", f"{what} must be token ids (integers separated by spaces or commas)"
                                          f"{hint}, got {x[:40]!r}") from None
        if ids[-1] < 0:
            raise SwarefError("argument", f"{what}: token ids must be >= 0, got {ids[-1]}")
    return ids


def load_hf_tokenizer(directory):
    """HFTokenizer for ``directory/tokenizer.json``, or None when there is none."""
    from .checkpoint import load_tokenizer
    tok = load_tokenizer(directory)
    return HFTokenizer(tok) if tok is not None else None


# ------------------------------------------------------------------ stop strings

class StopMatcher:
    """Cuts streamed text at the first of ``stops``.

    ``push(text) -> (text safe to show, stopped)``: text that could be the start
    of a stop string is held back until it is known not to be; on a match,
    the text before it is returned and ``matched`` is the stop string.
    ``flush()`` returns what is held back when the sequence ends without one.
    The stop string itself is never returned.
    """

    def __init__(self, stops=()):
        self.stops = check_stops(stops)
        self.pending = ""
        self.matched = None

    def push(self, text):
        if self.matched is not None:
            return "", True
        if not self.stops:
            return text, False
        buf = self.pending + text
        hits = [(buf.find(s), -len(s), s) for s in self.stops if s in buf]
        if hits:
            i, _, s = min(hits)
            self.matched, self.pending = s, ""
            return buf[:i], True
        # Hold back the longest suffix of buf that is a proper prefix of some stop string.
        hold = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(buf)), hold, -1):
                if buf.endswith(s[:n]):
                    hold = n
                    break
        self.pending = buf[len(buf) - hold:] if hold else ""
        return buf[:len(buf) - hold], False

    def flush(self):
        out, self.pending = self.pending, ""
        return out


def check_stops(stops):
    """stops: None, a string, or a list of non-empty strings -> a tuple of strings."""
    if stops is None:
        return ()
    if isinstance(stops, str):
        stops = [stops]
    if not isinstance(stops, (list, tuple)):
        raise SwarefTypeError("argument", f"stop must be a string or a list of strings, got {type(stops).__name__}")
    for i, s in enumerate(stops):
        if not isinstance(s, str) or not s:
            raise SwarefError("argument", f"stop[{i}] must be a non-empty string, got {s!r}")
    return tuple(stops)


# ------------------------------------------------------------------ generation

def default_backend():
    """"cython" where the compiled kernel is built, else "reference"."""
    from .generation import check_backend_available
    try:
        check_backend_available("cython")
    except SwarefError:
        return "reference"
    return "cython"


@dataclass
class Completion:
    """One sequence's result: the text (cut before a stop string), the new token ids and their
    log-probabilities (see ``sampling.sample_with_logprob``), why it ended ("stop": a stop string,
    "eos": an end-of-sequence token, "length": max_new_tokens), the stop string matched, and the
    prompt's token ids."""

    text: str
    tokens: list
    logprobs: list
    finish_reason: str
    stop: str = None
    prompt_tokens: list = field(default_factory=list)

    def to_dict(self):
        return {"text": self.text, "tokens": list(self.tokens), "logprobs": list(self.logprobs),
                "finish_reason": self.finish_reason, "stop": self.stop, "prompt_tokens": list(self.prompt_tokens)}


class TextModel:
    """A model with its tokenizer and chat template: text in, text out.

    model: swaref.models.Model; tokenizer: HFTokenizer, WordTokenizer or
    IdTokenizer; chat_template: a Jinja string or None; special_tokens: the
    named special tokens the template sees.
    """

    def __init__(self, model, tokenizer=None, chat_template=None, special_tokens=None, name="model"):
        self.model = model
        self.tokenizer = tokenizer if tokenizer is not None else IdTokenizer()
        self.chat_template = chat_template
        self.special_tokens = dict(special_tokens or {})
        self.name = name

    @property
    def config(self):
        return self.model.config

    def encode(self, text, add_special_tokens=True, what="the prompt"):
        if not isinstance(text, str):
            raise SwarefTypeError("argument", f"{what} must be a string, got {type(text).__name__}")
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens, what=what)

    def decode(self, ids):
        return self.tokenizer.decode(ids)

    def apply_chat_template(self, messages, add_generation_prompt=True, **kwargs):
        """The chat rendered with the checkpoint's template (text; ``encode(..., add_special_tokens=False)``
        gives the ids transformers' ``apply_chat_template(tokenize=True)`` gives)."""
        if self.chat_template is None:
            raise SwarefError("argument", f"{self.name} has no chat template (neither chat_template.jinja nor "
                                          f"a 'chat_template' in tokenizer_config.json); chat needs one")
        return render_chat(self.chat_template, messages, add_generation_prompt=add_generation_prompt,
                           special_tokens=self.special_tokens, **kwargs)

    def sampling_params(self, temperature=None, top_p=None, top_k=None, min_p=None, seed=None):
        """SamplingParams from the arguments given; each one left None takes the checkpoint's default.

        The defaults are what transformers' ``generate`` does with no arguments:
        the checkpoint's generation_config.json (``config.sampling``: do_sample,
        temperature, top_p, top_k) when it asks for sampling (do_sample true),
        else greedy; min_p 0.  A checkpoint without one, and --tiny, are greedy.
        """
        from .sampling import SamplingParams
        d = getattr(self.model.config, "sampling", None) or {}
        if not d.get("do_sample"):
            d = {}
        pick = lambda given, name, off: given if given is not None else d.get(name, off)  # noqa: E731
        return SamplingParams(pick(temperature, "temperature", 0.0 if not d else 1.0), pick(top_p, "top_p", 1.0),
                              seed, pick(top_k, "top_k", 0), 0.0 if min_p is None else min_p)

    def prompt_ids(self, prompt, *, chat=False, system=None, what="prompt"):
        """A prompt -> token ids: text (encoded; with chat, the user's message), token ids (a list of
        ints, used as they are), or with chat a list of message dicts."""
        if system is not None and not chat:
            raise SwarefError("argument", "system needs chat=True (--system needs --chat)")
        if system is not None and not isinstance(system, str):
            raise SwarefTypeError("argument", f"system must be a string, got {type(system).__name__}")
        if isinstance(prompt, str):
            if not chat:
                ids = self.encode(prompt, what=what)
            else:
                msgs = ([{"role": "system", "content": system}] if system is not None else []) + \
                       [{"role": "user", "content": prompt}]
                ids = self.encode(self.apply_chat_template(msgs), add_special_tokens=False, what=what)
        elif chat and isinstance(prompt, (list, tuple)) and prompt and all(isinstance(m, dict) for m in prompt):
            msgs = ([{"role": "system", "content": system}] if system is not None else []) + list(prompt)
            ids = self.encode(self.apply_chat_template(msgs), add_special_tokens=False, what=what)
        elif isinstance(prompt, (list, tuple)) or hasattr(prompt, "__array__"):
            if chat:
                raise SwarefError("argument", f"{what}: chat needs text or messages, not token ids")
            ids = [V.check_int(t, f"{what}[{i}]", minimum=0) for i, t in enumerate(list(prompt))]
        else:
            raise SwarefTypeError("argument", f"{what} must be a string or a list of token ids, "
                                              f"got {type(prompt).__name__}")
        if not ids:
            raise SwarefError("argument", f"{what} encodes to no tokens")
        return ids

    def complete(self, prompts, *, max_new_tokens=64, temperature=None, top_p=None, top_k=None, min_p=None, seed=None,
                 stop=None, chat=False, system=None, backend=None, chunk_size=None, num_threads=None,
                 stop_on_eos=True, on_text=None, progress=None):
        """Generate for a batch of prompts -> (list of Completion, the GenerationResult).

        prompts: a list, each text, token ids or (chat) messages (see prompt_ids).
        on_text(b, text) receives sequence b's text as it is decoded, never a
        stop string.  Sampling: temperature (0 = greedy), top_k, top_p, min_p
        as transformers applies them, seeded by ``seed`` per sequence; each left
        None takes the checkpoint's default (``sampling_params``).
        backend: None = "cython" where built, else "reference".
        """
        from . import generation as G
        from .sampling import Sampler
        if not isinstance(prompts, (list, tuple)) or not prompts:
            raise SwarefError("argument", "prompts must be a non-empty list")
        params = self.sampling_params(temperature, top_p, top_k, min_p, seed)
        stops = check_stops(stop)
        if on_text is not None and not callable(on_text):
            raise SwarefTypeError("argument", f"on_text must be a callable or None, got {type(on_text).__name__}")
        ids = [self.prompt_ids(p, chat=chat, system=system, what=f"prompts[{b}]" if len(prompts) > 1 else "prompt")
               for b, p in enumerate(prompts)]
        backend = default_backend() if backend is None else backend
        sampler = Sampler(params)
        decoders = [self.tokenizer.incremental() for _ in ids]
        matchers = [StopMatcher(stops) for _ in ids]
        texts = [[] for _ in ids]

        def emit(b, piece):
            if piece:
                texts[b].append(piece)
                if on_text is not None:
                    on_text(b, piece)

        def on_token(b, tok):
            piece, stopped = matchers[b].push(decoders[b].step(tok))
            emit(b, piece)
            return stopped

        res = G.generate(self.model, ids, max_new_tokens=max_new_tokens, sample=sampler, chunk_size=chunk_size,
                         backend=backend, num_threads=num_threads, stop_on_eos=stop_on_eos, on_token=on_token,
                         progress=progress)
        out = []
        for b in range(len(ids)):
            m = matchers[b]
            if m.matched is None:
                piece, _ = m.push(decoders[b].flush())
                emit(b, piece)
                emit(b, m.flush())
            reason = "stop" if m.matched is not None else "eos" if res.finished_by_eos[b] else "length"
            out.append(Completion("".join(texts[b]), list(res.tokens[b]), list(sampler.logprobs.get(b, [])),
                                  reason, m.matched, ids[b]))
        return out, res

    def generate(self, prompt, *, max_new_tokens=64, **kwargs):
        """Text in, text out: a string -> the generated text; a list of strings (a batch) -> a list.

        Keyword arguments as ``complete`` (temperature, top_k, top_p, min_p,
        seed, stop, chat, system, backend, ...).  The prompt's own text is not
        repeated in the output.
        """
        if isinstance(prompt, str):
            return self.complete([prompt], max_new_tokens=max_new_tokens, **kwargs)[0][0].text
        if not isinstance(prompt, (list, tuple)) or not all(isinstance(p, str) for p in prompt):
            raise SwarefTypeError("argument", "prompt must be a string or a list of strings (for token ids use "
                                              "generate_ids or complete)")
        return [c.text for c in self.complete(list(prompt), max_new_tokens=max_new_tokens, **kwargs)[0]]

    def generate_ids(self, prompts, *, max_new_tokens=64, temperature=None, top_p=None, top_k=None, min_p=None,
                     seed=None, backend=None, **kwargs):
        """The token-id level: ``swaref.models.generate`` on this model with a seeded sampler
        -> GenerationResult.  Sampling as ``complete``; backend None = "cython" where built,
        else "reference"."""
        from .generation import generate
        from .sampling import Sampler
        sampler = Sampler(self.sampling_params(temperature, top_p, top_k, min_p, seed))
        return generate(self.model, prompts, max_new_tokens=max_new_tokens, sample=sampler,
                        backend=default_backend() if backend is None else backend, **kwargs)


def load_model(directory, rope_theta=None, dtype="float32"):
    """A checkpoint directory -> TextModel (weights, tokenizer.json if present, chat template, special tokens).

    Without tokenizer.json, prompts and output are token ids.  The weights are
    loaded by ``swaref.models.checkpoint.load_model`` (every check there; ``dtype`` "float32" or
    "bfloat16", see there).
    """
    from .checkpoint import load_model as load_weights
    if not isinstance(directory, (str, os.PathLike)):
        raise SwarefTypeError("argument", f"directory must be a path, got {type(directory).__name__}")
    directory = os.fspath(directory)
    model = load_weights(directory, rope_theta=rope_theta, dtype=dtype)
    tok = load_hf_tokenizer(directory)
    return TextModel(model, tok, read_chat_template(directory), read_special_tokens(directory), name=directory)


#: The --tiny model: the tutorial's words as vocabulary, one sliding layer and one full-attention layer.
TINY = dict(vocab_size=len(TUTORIAL_WORDS), hidden_size=64, intermediate_size=128, n_layers=2, n_heads=4,
            n_kv_heads=2, head_dim=16, windows=[8, None], rope_theta=10000.0, rms_norm_eps=1e-5)


def tiny_model(seed=0):
    """A small random-weight TextModel over the tutorial's words (its output is random words)."""
    from .config import ModelConfig
    from .weights import random_model
    seed = V.check_int(seed, "seed", minimum=0)
    return TextModel(random_model(ModelConfig(**TINY), seed=seed), WordTokenizer(), name="--tiny")

