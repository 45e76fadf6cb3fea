"""jsonargparse's parse errors (a Union's every alternative, 400-1,200 characters) reduced to one line: the
key, the value and what was expected (the allowed literals, the closest class or argument name)."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from dataclasses import dataclass, field

from lightning_seg.errors import closest, truncate

_KEY = re.compile(r'Parser key "([^"]+)"')
_CLASS_PATH = re.compile(r"Problem with given class_path '([^']+)'")
_CALLABLE = "expects a function or a callable class:"
_NO_ATTRIBUTE = re.compile(r"module '([\w.]+)' has no attribute '(\w+)'")
_NO_MODULE = re.compile(r"No module named '([\w.]+)'")
_NOT_ACCEPTED = re.compile(r"Option '([^']+)' is not accepted")
_LITERAL = re.compile(r"Expected a typing\.Literal\[(.*)\]")
_EXPECTED = re.compile(r"^Expected an? (.+?)(?:\. Got value: (.*))?$")
_GOT_VALUE = re.compile(r"\. Got value: (.*?)(?:\. Got value: .*)?$")
_GIVEN_VALUE = re.compile(r"^Given value: (.*?)(?:\. Got value: .*)?$")
_BUILT_CLASS = re.compile(r"Got value: Namespace\(class_path='([^']+)'")
_NESTED_ARG = re.compile(r"NestedArg\(key='([^']*)', val=(.*)\)$")
# alternatives of a Union that say nothing about the user's mistake: a value may also be a path to a
# YAML file or an import path, whatever the type
_PATH_ALTERNATIVES = ("Expected a path but", "Expected a dot import path string")
_NOISE = (
    "Expected a <class 'NoneType'>",
    *_PATH_ALTERNATIVES,
    "Subtypes:",
    "Errors:",
    "Given value type:",
    "Given value:",
    "Does not validate against any of the Union subtypes",
)


@dataclass
class _Node:
    text: str
    indent: int
    parent: _Node | None = None
    children: list[_Node] = field(default_factory=list)


def _tree(text: str) -> _Node:
    """jsonargparse's message as a tree by indentation (a ``- `` item counts as indented by 2)."""
    root = _Node("", -1)
    stack = [root]
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        indent = len(raw) - len(raw.lstrip())
        if line.startswith("- "):
            line, indent = line[2:].strip(), indent + 2
        while stack[-1].indent >= indent:
            stack.pop()
        node = _Node(line, indent, stack[-1])
        stack[-1].children.append(node)
        stack.append(node)
    return root


def _ancestry(node: _Node) -> list[_Node]:
    chain = []
    while node.parent is not None:
        chain.append(node)
        node = node.parent
    return chain[::-1]


def _key_and_class(node: _Node) -> tuple[str, str | None, bool]:
    """The config key a node speaks about, the class_path in force there, and whether the next key
    would be one of that class's ``init_args``."""
    parts: list[str] = []
    class_path: str | None = None
    in_class = False
    for line in (n.text for n in _ancestry(node)):
        events = [(m.start(), "key", m.group(1)) for m in _KEY.finditer(line)]
        events += [(m.start(), "class", m.group(1)) for m in _CLASS_PATH.finditer(line)]
        events += [(m.start(), "callable", None) for m in re.finditer(re.escape(_CALLABLE), line)]
        for _, kind, value in sorted(events, key=lambda e: e[0]):
            if kind == "key":
                if in_class and parts and not value.startswith("init_args"):
                    parts.append("init_args")
                parts.append(value)
                in_class = False
            else:
                in_class = True
                # a callable given by class_path: jsonargparse shows it as the value ("Got value: Namespace(...)")
                built = _BUILT_CLASS.search(line) if kind == "callable" else None
                if value or built:
                    class_path = value or built.group(1)
    return ".".join(parts), class_path, in_class


def _value_near(node: _Node) -> str | None:
    """The value jsonargparse reports for ``node``: its own ``Got value``, else the nearest ``Given value``."""
    got = _GOT_VALUE.search(node.text)
    if got:
        return got.group(1)
    current: _Node | None = node
    while current is not None and current.parent is not None:
        for sibling in current.parent.children:
            given = _GIVEN_VALUE.match(sibling.text)
            if given:
                nested = _NESTED_ARG.match(given.group(1))
                return nested.group(2).strip("'\"") if nested else given.group(1)
        current = current.parent
    return None


def _leaves(node: _Node) -> list[_Node]:
    if not node.children:
        return [node]
    return [leaf for child in node.children for leaf in _leaves(child)]


def _is_noise(text: str) -> bool:
    return text.startswith(_NOISE)


def _type_name(expected: str) -> str:
    expected = re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", expected)
    return {"NoneType": "null", "int": "an int", "float": "a float", "str": "a string", "bool": "a bool"}.get(
        expected, expected
    )


def _public_names(module_name: str) -> list[str]:
    try:
        module = importlib.import_module(module_name)
    except Exception:  # a suggestion is optional
        return []
    return [
        name
        for name in dir(module)
        if not name.startswith("_")
        and (inspect.isclass(getattr(module, name, None)) or inspect.ismodule(getattr(module, name, None)))
    ]


def _parameters(class_path: str | None) -> list[str]:
    """The ``init_args`` a class accepts (its ``__init__`` and those of its bases, for ``**kwargs``)."""
    if not class_path or "." not in class_path:
        return []
    module_name, name = class_path.rsplit(".", 1)
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except Exception:
        return []
    names: list[str] = []
    for klass in inspect.getmro(cls) if inspect.isclass(cls) else [cls]:
        try:
            parameters = inspect.signature(klass.__init__ if inspect.isclass(klass) else klass).parameters
        except (TypeError, ValueError):
            continue
        names += [
            p.name
            for p in parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
    return list(dict.fromkeys(names))


def _quote(value: str | None, limit: int = 60) -> str:
    if value is None:
        return "?"
    value = value.strip()
    if len(value) > limit:
        value = value[: limit - 1] + "…"
    return repr(value) if not value.startswith(("'", '"', "[", "{", "Namespace(")) else value


def _missing_class(key: str, leaf: _Node, class_path: str | None) -> str | None:
    match = _NO_ATTRIBUTE.search(leaf.text)
    if not match:
        return None
    module_name, attribute = match.groups()
    wanted = class_path if class_path and f"{module_name}.{attribute}" in class_path else None
    got = _GOT_VALUE.search(leaf.text)
    if wanted is None and got and f"{module_name}.{attribute}" in got.group(1):
        wanted = re.sub(r"^Namespace\(class_path='([^']+)'.*", r"\1", got.group(1))
    wanted = wanted or f"{module_name}.{attribute}"
    if wanted.endswith(f"{module_name}.{attribute}"):
        message = f"{key or 'class_path'}: no class {wanted}"
    else:  # a module on the way is missing
        message = f"{key or 'class_path'}: cannot import {wanted} ({module_name} has no {attribute})"
    best = closest(attribute, _public_names(module_name))
    if best:
        message += (
            f"; did you mean {wanted.replace(f'{module_name}.{attribute}', f'{module_name}.{best}', 1)}?"
        )
    return message


def _finding(leaf: _Node) -> tuple[int, str] | None:
    """(priority, message) for one leaf of the error tree; lower priority wins; None for noise."""
    text = leaf.text
    key, class_path, in_class = _key_and_class(leaf)
    missing = _missing_class(key, leaf, class_path)
    if missing:
        return 0, missing
    no_module = _NO_MODULE.search(text)
    if no_module:
        return (
            0,
            f"{key or 'class_path'}: cannot import {class_path or no_module.group(1)} (no module {no_module.group(1)})",
        )
    unknown = _NOT_ACCEPTED.search(text)
    if unknown:
        name = unknown.group(1)
        full = f"{key}.init_args.{name}" if key and in_class else (f"{key}.{name}" if key else name)
        owner = class_path.rsplit(".", 1)[-1] if class_path else "this class"
        message = f"{full}: unknown key, not an argument of {owner}"
        best = closest(name.rsplit(".", 1)[-1], _parameters(class_path))
        return 1, message + (f"; did you mean {best}?" if best else " (see --print_config)")
    literal = _LITERAL.search(text)
    if literal:
        # every literal this key accepts: the sibling alternatives of the same Union
        options: list[str] = []
        for sibling in leaf.parent.children if leaf.parent else [leaf]:
            found = _LITERAL.search(sibling.text)
            try:
                options += [str(o) for o in ast.literal_eval(f"[{found.group(1)}]")] if found else []
            except (ValueError, SyntaxError):
                continue
        options = list(dict.fromkeys(options))
        value = _value_near(leaf)
        shown: list[str] = []
        for option in options:
            if len(", ".join([*shown, repr(option)])) > 90:
                shown.append("...")
                break
            shown.append(repr(option))
        message = f"{key}: {_quote(value)} is not one of {', '.join(shown) or literal.group(1)}"
        best = closest(value.strip("'\""), options) if value and options else None
        return 2, message + (f"; did you mean {best!r}?" if best else "")
    if _is_noise(text):
        return None
    expected = _EXPECTED.match(text)
    if expected:
        # every type this key accepts: the sibling alternatives of the same Union
        alternatives = [
            _type_name(m.group(1))
            for sibling in (leaf.parent.children if leaf.parent else [leaf])
            if (m := _EXPECTED.match(sibling.text)) and not sibling.text.startswith(_PATH_ALTERNATIVES)
        ]
        types = " or ".join(dict.fromkeys(alternatives)) or _type_name(expected.group(1))
        return 3, f"{key}: expected {types}, got {_quote(_value_near(leaf))}"
    detail = re.sub(r'^(?:Parser key "[^"]+":\s*)+', "", text) or text
    return 4, f"{key}: {detail}" if key else detail


def reduce_parse_error(text: str) -> str:
    """jsonargparse's multi-line (often 400–1,200 characters once joined) error → one short line naming
    the key, the value and what was expected. Falls back to the first specific line, truncated."""
    try:
        root = _tree(text)
        findings = [f for leaf in _leaves(root) if (f := _finding(leaf)) is not None]
        if findings:
            return truncate(min(findings, key=lambda f: f[0])[1])
    except Exception:  # never let the error reporter itself fail
        pass
    lines = [line.strip(" -") for line in text.splitlines() if line.strip(" -")]
    specific = [line for line in lines[1:] if not _is_noise(line)]
    return truncate(" ".join(lines[:1] + specific[:1]))
