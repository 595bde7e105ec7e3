"""Chat templates: a checkpoint's template read and rendered as transformers'
``apply_chat_template`` renders it, in jinja2's immutable sandbox (the ``chat`` extra).

A template is untrusted input: no loader (no file access), at most 1 MiB, and anything it
raises is a SwarefError.  jinja2 is imported only when a template is rendered.
"""
import functools
import json
import numbers
import os

from ..errors import SwarefError, SwarefTypeError

#: Largest chat_template.jinja and tokenizer_config.json read (real ones: a few KiB, and up to a few MiB
#: for a tokenizer_config.json listing every added token).
MAX_TEMPLATE_BYTES = 1 << 20
MAX_TOKENIZER_CONFIG_BYTES = 64 << 20
#: transformers' named special tokens (``SPECIAL_TOKENS_ATTRIBUTES``): a chat template sees each as a variable.
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def _read_text(path, max_bytes, what):
    size = os.path.getsize(path)
    if size > max_bytes:
        raise SwarefError("format", f"{path} is {size} bytes; at most {max_bytes} are read ({what})")
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SwarefError("format", f"{path} is not UTF-8 text: {e}") from None


def _tokenizer_config(directory):
    from .checkpoint import load_json
    path = os.path.join(directory, "tokenizer_config.json")
    if not os.path.isfile(path):
        return {}, path
    cfg = load_json(path, MAX_TOKENIZER_CONFIG_BYTES)
    if not isinstance(cfg, dict):
        raise SwarefError("checkpoint", f"{path}: expected a JSON object, got {type(cfg).__name__}")
    return cfg, path


def read_chat_template(directory):
    """The checkpoint's chat template as transformers finds it, or None.

    ``chat_template.jinja`` wins over tokenizer_config.json's ``chat_template``
    (transformers' loader reads the file after the config); the latter is a
    string, or a list of {"name", "template"} of which "default" is used.
    """
    path = os.path.join(directory, "chat_template.jinja")
    if os.path.isfile(path):
        return _read_text(path, MAX_TEMPLATE_BYTES, "a chat template")
    cfg, cpath = _tokenizer_config(directory)
    t = cfg.get("chat_template")
    if t is None or isinstance(t, str):
        return t
    if isinstance(t, list):
        named = {x.get("name"): x.get("template") for x in t if isinstance(x, dict)}
        if isinstance(named.get("default"), str):
            return named["default"]
        raise SwarefError("checkpoint", f"{cpath}: 'chat_template' lists templates {sorted(map(str, named))} "
                                        f"but none named 'default' (the one transformers uses)")
    raise SwarefError("checkpoint", f"{cpath}: 'chat_template' must be a string or a list of named templates, "
                                    f"got {type(t).__name__}")


def read_special_tokens(directory):
    """{bos_token: "<s>", ...}: the named special tokens a chat template sees, from tokenizer_config.json
    (then special_tokens_map.json for any it lacks); a value may be a string or an {"content": ...} object."""
    cfg, _ = _tokenizer_config(directory)
    sources = [cfg]
    path = os.path.join(directory, "special_tokens_map.json")
    if os.path.isfile(path):
        from .checkpoint import load_json
        extra = load_json(path, MAX_TOKENIZER_CONFIG_BYTES)
        if isinstance(extra, dict):
            sources.append(extra)
    out = {}
    for name in SPECIAL_TOKEN_NAMES:
        for src in sources:
            v = src.get(name)
            if isinstance(v, dict):
                v = v.get("content")
            if isinstance(v, str):
                out[name] = v
                break
    return out


def _import_jinja2():
    try:
        import jinja2
        import jinja2.ext
        import jinja2.sandbox
    except ImportError:
        raise SwarefError("dependency", "chat templates need the 'jinja2' package: pip install 'swaref[chat]' "
                                        "(or pip install 'jinja2>=3.1.6')") from None
    version = tuple(int(x) if x.isdigit() else 0 for x in jinja2.__version__.split(".")[:3])
    if version < (3, 1, 6):
        # transformers refuses these too: older releases have known sandbox escapes.
        raise SwarefError("dependency", f"chat templates need jinja2 >= 3.1.6 (older releases have sandbox "
                                        f"escapes), found {jinja2.__version__}: pip install -U 'swaref[chat]'")
    return jinja2


_ENV = {}


def _environment():
    """transformers' chat-template environment (utils/chat_template_utils.py,
    ``_cached_compile_jinja_template``): an ImmutableSandboxedEnvironment with
    trim_blocks and lstrip_blocks, the loopcontrols extension, a ``{% generation %}``
    block (transformers tracks assistant tokens with it; here it renders its
    body), a ``tojson`` that does not escape HTML, ``raise_exception``,
    ``strftime_now``, and ``dict`` / ``namespace`` that refuse underscore names.
    No loader: a template cannot include or import files."""
    if "env" in _ENV:
        return _ENV["env"]
    jinja2 = _import_jinja2()
    from datetime import datetime

    class GenerationBlock(jinja2.ext.Extension):
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

        def _render(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format):
        return datetime.now().strftime(format)

    class TemplateDict:
        def __call__(self, *args, **kwargs):
            return dict(*args, **kwargs)

        def fromkeys(self, *args, **kwargs):
            return dict.fromkeys(*args, **kwargs)

    class TemplateNamespace(jinja2.utils.Namespace):
        def __init__(*args, **kwargs):
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                TemplateNamespace._check_name(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name, value):
            TemplateNamespace._check_name(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check_name(name):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(f"chat templates cannot store underscore-prefixed "
                                                      f"attributes on a namespace, got {name!r}")

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                       extensions=[GenerationBlock, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    env.globals["dict"] = TemplateDict()
    env.globals["namespace"] = TemplateNamespace
    _ENV["env"] = env
    return env


@functools.lru_cache(maxsize=16)
def _compile(template):
    """The template compiled once (a batch renders it once per prompt)."""
    env = _environment()
    import jinja2
    try:
        return env.from_string(template)
    except jinja2.TemplateSyntaxError as e:
        raise SwarefError("format", f"the chat template is not valid Jinja (line {e.lineno}): {e.message}") from None


def _plain(value, where="messages"):
    """The data a template sees, rebuilt from plain JSON types (as transformers' ``_plain_template_data``)."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, dict):
        return {_plain(k, where): _plain(v, where) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    raise SwarefTypeError("argument", f"{where} must hold only strings, numbers, lists and dicts, "
                                      f"got {type(value).__name__}")


def check_messages(messages):
    """A chat: a non-empty list of {"role": str, "content": ...} dicts; keys whose value is None dropped."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise SwarefError("argument", "messages must be a non-empty list of {'role', 'content'} dicts")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or "content" not in m:
            raise SwarefError("argument", f"messages[{i}] must be a dict with a string 'role' and a 'content', "
                                          f"got {m!r:.80}")
        out.append({k: v for k, v in m.items() if v is not None})
    return _plain(out)


def render_chat(template, messages, *, add_generation_prompt=True, special_tokens=None, **kwargs):
    """The chat ``messages`` rendered by ``template`` as transformers' ``apply_chat_template(...,
    tokenize=False)`` renders it: variables ``messages``, ``tools`` (None), ``documents`` (None),
    ``add_generation_prompt``, the named special tokens (``bos_token``, ...) and ``kwargs``.

    A template is untrusted input: it runs sandboxed, and anything it raises
    (``raise_exception``, a syntax error, a sandbox refusal, an error in its
    own code) is a SwarefError saying the template failed.
    """
    if not isinstance(template, str):
        raise SwarefTypeError("argument", f"template must be a string, got {type(template).__name__}")
    messages = check_messages(messages)
    jinja2 = _import_jinja2()
    compiled = _compile(template)
    variables = {**_plain(special_tokens or {}), **_plain(kwargs, "kwargs")}
    try:
        return compiled.render(messages=messages, tools=None, documents=None,
                               add_generation_prompt=bool(add_generation_prompt), **variables)
    except jinja2.exceptions.SecurityError as e:
        raise SwarefError("checkpoint", f"the chat template did something the sandbox forbids: {e}") from e
    except jinja2.TemplateError as e:
        raise SwarefError("argument", f"the chat template refused these messages: {e}") from e
    except Exception as e:  # the template's own code failed (1/0, a bad operation): untrusted input, not our bug
        raise SwarefError("checkpoint", f"the chat template failed: {type(e).__name__}: {e}") from e
