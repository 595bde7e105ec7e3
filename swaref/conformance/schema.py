"""A small JSON Schema validator for the published schemas (manifest, report).

swaref's runtime needs NumPy only, so instead of depending on ``jsonschema``
this validates the subset of JSON Schema (draft 2020-12) that
``manifest.schema.json`` and ``report.schema.json`` use: type, enum, const,
pattern, minimum, maximum, minLength, maxLength, minItems, maxItems, items,
properties, required, additionalProperties, propertyNames, maxProperties,
allOf, anyOf, if/then.  A schema using any other keyword is refused rather
than half-checked.  The tests validate real and hostile documents with both
this and ``jsonschema`` and require the same answer.
"""
import json
import os
import re

_HERE = os.path.dirname(os.path.abspath(__file__))
_ANNOTATIONS = {"$schema", "$id", "title", "description", "$comment", "examples", "default"}
_TYPES = {
    "object": lambda x: isinstance(x, dict),
    "array": lambda x: isinstance(x, list),
    "string": lambda x: isinstance(x, str),
    "boolean": lambda x: isinstance(x, bool),
    "null": lambda x: x is None,
    "number": lambda x: isinstance(x, (int, float)) and not isinstance(x, bool),
    # As in JSON Schema, 1.0 is an integer.
    "integer": lambda x: (isinstance(x, int) and not isinstance(x, bool)) or (isinstance(x, float) and x.is_integer()),
}


def load_schema(name):
    """One of the schemas shipped next to this module: "manifest" or "report"."""
    with open(os.path.join(_HERE, f"{name}.schema.json")) as f:
        return json.load(f)


def schema_path(name):
    return os.path.join(_HERE, f"{name}.schema.json")


def errors(doc, schema, path="$", limit=10):
    """The first ``limit`` places where ``doc`` breaks ``schema``, as "path: problem" strings (empty: valid)."""
    out = []
    _check(doc, schema, path, out, limit)
    return out[:limit]


def _equal(a, b):
    # JSON equality: True is not 1.
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else a == b


def _check(x, s, path, out, limit):
    if len(out) >= limit:
        return
    unknown = set(s) - _ANNOTATIONS - set(_KEYWORDS)
    if unknown:
        raise ValueError(f"schema at {path} uses unsupported keywords {sorted(unknown)}")
    for key in s:
        if key in _KEYWORDS:
            _KEYWORDS[key](x, s, path, out, limit)


def _type(x, s, path, out, limit):
    types = s["type"] if isinstance(s["type"], list) else [s["type"]]
    if not any(_TYPES[t](x) for t in types):
        out.append(f"{path}: expected {' or '.join(types)}, got {type(x).__name__}")


def _enum(x, s, path, out, limit):
    if not any(_equal(x, e) for e in s["enum"]):
        out.append(f"{path}: {_short(x)} is not one of {s['enum']}")


def _const(x, s, path, out, limit):
    if not _equal(x, s["const"]):
        out.append(f"{path}: expected {s['const']!r}, got {_short(x)}")


def _string(check):
    def run(x, s, path, out, limit):
        if isinstance(x, str):
            check(x, s, path, out)
    return run


def _number(check):
    def run(x, s, path, out, limit):
        if _TYPES["number"](x):
            check(x, s, path, out)
    return run


def _array(check):
    def run(x, s, path, out, limit):
        if isinstance(x, list):
            check(x, s, path, out, limit)
    return run


def _object(check):
    def run(x, s, path, out, limit):
        if isinstance(x, dict):
            check(x, s, path, out, limit)
    return run


def _pattern(x, s, path, out):
    if re.search(s["pattern"], x) is None:
        out.append(f"{path}: {_short(x)} does not match {s['pattern']}")


def _items(x, s, path, out, limit):
    for i, item in enumerate(x):
        _check(item, s["items"], f"{path}[{i}]", out, limit)


def _properties(x, s, path, out, limit):
    for k, sub in s["properties"].items():
        if k in x:
            _check(x[k], sub, f"{path}.{k}", out, limit)


def _required(x, s, path, out, limit):
    missing = [k for k in s["required"] if k not in x]
    if missing:
        out.append(f"{path}: missing {missing}")


def _additional(x, s, path, out, limit):
    extra = [k for k in x if k not in s.get("properties", {})]
    add = s["additionalProperties"]
    if add is False and extra:
        out.append(f"{path}: unexpected {[_short(k) for k in extra[:5]]}")
    elif isinstance(add, dict):
        for k in extra:
            _check(x[k], add, f"{path}.{k}", out, limit)


def _property_names(x, s, path, out, limit):
    for k in x:
        _check(k, s["propertyNames"], f"{path} key {_short(k)}", out, limit)


def _all_of(x, s, path, out, limit):
    for sub in s["allOf"]:
        _check(x, sub, path, out, limit)


def _any_of(x, s, path, out, limit):
    if not any(not errors(x, sub, path) for sub in s["anyOf"]):
        out.append(f"{path}: {_short(x)} matches none of the allowed forms")


def _if(x, s, path, out, limit):
    if not errors(x, s["if"], path) and "then" in s:
        _check(x, s["then"], path, out, limit)


def _short(x):
    r = repr(x)
    return r if len(r) <= 60 else r[:57] + "..."


_KEYWORDS = {
    "type": _type, "enum": _enum, "const": _const,
    "pattern": _string(_pattern),
    "minLength": _string(lambda x, s, p, o: len(x) < s["minLength"] and o.append(f"{p}: shorter than {s['minLength']}")),
    "maxLength": _string(lambda x, s, p, o: len(x) > s["maxLength"] and o.append(f"{p}: longer than {s['maxLength']}")),
    "minimum": _number(lambda x, s, p, o: x < s["minimum"] and o.append(f"{p}: {x} < minimum {s['minimum']}")),
    "maximum": _number(lambda x, s, p, o: x > s["maximum"] and o.append(f"{p}: {x} > maximum {s['maximum']}")),
    "minItems": _array(lambda x, s, p, o, n: len(x) < s["minItems"] and o.append(f"{p}: fewer than {s['minItems']} items")),
    "maxItems": _array(lambda x, s, p, o, n: len(x) > s["maxItems"] and o.append(f"{p}: more than {s['maxItems']} items")),
    "items": _array(_items),
    "properties": _object(_properties), "required": _object(_required),
    "additionalProperties": _object(_additional), "propertyNames": _object(_property_names),
    "maxProperties": _object(lambda x, s, p, o, n: len(x) > s["maxProperties"]
                             and o.append(f"{p}: more than {s['maxProperties']} properties")),
    "allOf": _all_of, "anyOf": _any_of, "if": _if, "then": lambda *a: None,
}
