"""Reading YAML files: jinja2 templating, then YAML with line numbers kept.

A file may start with a document holding only ``variables:`` (defaults for
the template), separated from the body by a line ``---``. Variables given
on the command line (``--set key=value``, the value read as YAML: ``5`` is a
number, ``1%`` a string) override those; a name the file neither declares
nor uses is an error (``check_variables``). The process environment is
visible as ``env`` only when the caller asks for it.

Files may come from anyone and testbed runs as root, so templates render in
jinja2's immutable sandbox (``template_environment``): a template computes
values from its variables (arithmetic, loops, filters) but cannot reach
Python internals (``__globals__``, ``__class__``) or call methods that
change a value; trying is one error naming the file and line. A template
that loops too long or builds too much is stopped the same way
(``sandbox.py``: the bounds).

YAML anchors and aliases (``&name``, ``*name``) are refused anywhere in a
file: a kilobyte of nested aliases expands to gigabytes, and an alias
inside its own anchor never ends. Templates share values instead.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import jinja2
import jinja2.meta
import yaml
from jinja2.sandbox import SecurityError

from testbed.errors import ConfigError
from testbed.model import sandbox


@dataclass
class Document:
    """A loaded YAML document: the data and where each YAML path came from."""

    file: str
    data: Any
    lines: dict[str, int] = field(default_factory=dict)
    text: str = ""            # the YAML after templating
    variables: dict[str, Any] = field(default_factory=dict)

    def error(self, path: str, message: str) -> ConfigError:
        """A ConfigError pointing at ``path`` (and its line, when known)."""
        line = self.lines.get(path)
        probe = path
        while line is None and probe:
            # fall back to the closest enclosing path that has a line
            cut = max(probe.rfind("."), probe.rfind("["))
            probe = probe[:cut] if cut > 0 else ""
            line = self.lines.get(probe)
        return ConfigError(message, file=self.file, path=path or None, line=line)


ALIASES_REFUSED = ("YAML anchors and aliases (&name, *name) are not allowed; use a template "
                   "variable or loop to repeat a value")


class AliasRefused(yaml.MarkedYAMLError):
    """An anchor or alias in a file (see the module docstring)."""


class NoAliasLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader, refusing anchors and aliases where it meets them."""

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise AliasRefused(problem=ALIASES_REFUSED, problem_mark=event.start_mark)
        return super().compose_node(parent, index)


def alias_error(exc: AliasRefused, file: str) -> ConfigError:
    mark = exc.problem_mark
    return ConfigError(str(exc.problem), file=file, line=mark.line + 1 if mark else None)


def template_environment(undefined: type[jinja2.Undefined] = jinja2.StrictUndefined
                         ) -> sandbox.BoundedSandbox:
    """The jinja2 environment every user file is rendered (or parsed) in: the sandbox."""
    return sandbox.BoundedSandbox(undefined=undefined, keep_trailing_newline=True,
                                  autoescape=False)


def parse_assignment(text: str) -> tuple[str, Any]:
    """``key=value`` from the command line; the value is read as YAML (so 5 is an int,
    true a boolean; on/off/yes/no stay words, as in YAML 1.2)."""
    if "=" not in text:
        raise ConfigError(f"--set expects KEY=VALUE, got {text!r}")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key.isidentifier():
        raise ConfigError(f"--set: {key!r} is not a valid variable name")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, (dict, list)) or value is None:
        value = raw
    if isinstance(value, bool) and raw.strip().lower() not in ("true", "false"):
        value = raw         # YAML 1.1 reads on/off/yes/no as booleans: a word stays a word
    return key, value


def split_variables(text: str, file: str) -> tuple[dict[str, Any], str, int]:
    """Separate a leading ``variables:`` document. Returns (vars, body, body's first line)."""
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.rstrip() == "---":
            head = "".join(lines[:i])
            try:
                data = yaml.load(head, Loader=NoAliasLoader)
            except AliasRefused as exc:
                raise alias_error(exc, file) from None
            except yaml.YAMLError:
                return {}, text, 1
            if isinstance(data, dict) and set(data) == {"variables"}:
                variables = data["variables"] or {}
                if not isinstance(variables, dict):
                    raise ConfigError("variables must be a mapping of name: default",
                                      file=file, path="variables")
                # keep line numbers of the body true by blanking the head
                return variables, "\n" * (i + 1) + "".join(lines[i + 1:]), i + 2
            return {}, text, 1
    return {}, text, 1


def render(text: str, file: str, variables: Mapping[str, Any], *,
           use_env: bool = False) -> tuple[str, dict[str, Any]]:
    """Template ``text`` with jinja2. Undefined variables are errors."""
    defaults, body, _ = split_variables(text, file)
    context: dict[str, Any] = dict(defaults)
    context.update(variables)
    if use_env:
        context["env"] = dict(os.environ)
    try:
        rendered = sandbox.render(template_environment().from_string(body), context)
    except SecurityError as exc:
        raise sandbox_error(exc, file) from None
    except jinja2.UndefinedError as exc:
        hint = "" if use_env or "env" not in str(exc) else \
            " (the environment is visible as 'env' only with --env)"
        raise ConfigError(f"template: {exc.message}{hint}; define it under 'variables:' "
                          "or pass --set NAME=VALUE", file=file, line=_template_line(exc)) from None
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"template syntax: {exc.message}", file=file, line=exc.lineno) from None
    except Exception as exc:  # noqa: BLE001 - any failure of the user's template is bad input
        raise template_error(exc, file, body, context, given=variables) from None
    return rendered, context


def render_lenient(text: str, file: str, variables: Mapping[str, Any] | None = None
                   ) -> tuple[dict[str, Any], Any]:
    """The header defaults and the body rendered with unknown variables left empty, parsed.

    For reading what does not depend on variables (a workload's ``matrix:``,
    whether a file is a workload at all) before the variables are known.
    """
    defaults, body, _ = split_variables(text, file)
    context = {**defaults, **(variables or {})}
    try:
        lenient = template_environment(jinja2.ChainableUndefined)
        rendered = sandbox.render(lenient.from_string(body), context)
    except SecurityError as exc:
        raise sandbox_error(exc, file) from None
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"template syntax: {exc.message}", file=file, line=exc.lineno) from None
    except Exception as exc:  # noqa: BLE001 - any failure of the user's template is bad input
        raise template_error(exc, file, body, context, given=variables or {}) from None
    data, _ = parse_yaml(rendered, file)
    return dict(defaults), data


def closest(word: str, options: Iterable[str],
            synonyms: Mapping[str, str] | None = None) -> str | None:
    """The option ``word`` was probably meant to be (a known synonym, else a close spelling)."""
    options = sorted(set(options))
    if synonyms and synonyms.get(word) in options:
        return synonyms[word]
    match = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return match[0] if match else None


def known_variables(text: str, file: str) -> set[str]:
    """The variables a file knows: its ``variables:`` header and every name its template reads.

    ``env`` is not among them: the environment comes only from ``--env``.
    """
    defaults, body, _ = split_variables(text, file)
    try:
        tree = template_environment().parse(body)
        names = jinja2.meta.find_undeclared_variables(tree)
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"template syntax: {exc.message}", file=file, line=exc.lineno) from None
    except Exception as exc:  # noqa: BLE001 - jinja2 compiles the template: e.g. a constant
        # too long to print ({{ 2**20000 }}) fails there, before any render
        raise ConfigError(f"template: {type(exc).__name__}: {str(exc).split(';')[0]}",
                          file=file) from None
    return (set(map(str, defaults)) | names) - {"env"}


def check_variables(given: Iterable[str], known: Iterable[str], file: str, *,
                    hints: Mapping[str, str] | None = None, known_from: str = "the file") -> None:
    """Every name in ``given`` (``--set``) must be ``known``; else one error naming them all.

    A value no template reads would be stored and shown but change nothing,
    so it is refused rather than silently ignored. ``hints`` says more about a
    name than "did you mean" can (``repeat`` -> use ``--repeat``).
    """
    known = set(known)
    unknown = [name for name in dict.fromkeys(given) if name not in known]
    if not unknown:
        return
    described = []
    for name in unknown:
        hint = (hints or {}).get(name)
        if hint is None and name == "env":
            hint = "the environment is visible as 'env' only with --env"
        if hint is None:
            guess = closest(name, known)
            hint = f"did you mean {guess!r}?" if guess else None
        described.append(f"{name!r}" + (f" ({hint})" if hint else ""))
    plural = "s" if len(unknown) > 1 else ""
    raise ConfigError(f"--set: unknown variable{plural} {', '.join(described)}; variables "
                      f"of {known_from}: {', '.join(sorted(known)) or 'none'}", file=file)


def workload_instead(data: Any, file: str) -> ConfigError | None:
    """When a topology was expected but ``data`` is a workload: the error that says so."""
    if not isinstance(data, dict) or "flows" not in data or "nodes" in data:
        return None
    topo = data.get("topology")
    if isinstance(topo, str) and topo:
        where = f"its topology is {os.path.relpath(Path(file).parent / topo)}"
    else:
        where = "its topology is embedded in it"
    return ConfigError(f"this is a workload, not a topology ({where}); give a topology file, "
                       f"or run the workload with: testbed run {file}", file=file)


def check_topology_file(path: str | Path, variables: Mapping[str, Any]) -> None:
    """Before loading ``path`` as a topology: refuse a workload, and ``variables`` it does not know."""
    file = str(path)
    text = read(path)
    try:
        _, data = render_lenient(text, file, variables)
    except ConfigError:
        data = None       # not renderable even leniently: the real load says why
    wrong = workload_instead(data, file)
    if wrong is not None:
        raise wrong
    check_variables(variables, known_variables(text, file), file)


def sandbox_error(exc: SecurityError, file: str) -> ConfigError:
    """The error for a template that reached for what the sandbox keeps from it."""
    what = str(exc).rstrip(".")
    if isinstance(exc, sandbox.TemplateBound):
        return ConfigError(f"template: {what}", file=file, line=_template_line(exc))
    return ConfigError(f"template: {what}; templates are sandboxed: they compute values "
                       "from their variables, they cannot reach Python internals or run code",
                       file=file, line=_template_line(exc))


def template_error(exc: Exception, file: str, body: str, context: Mapping[str, Any], *,
                   given: Mapping[str, Any]) -> ConfigError:
    """One ConfigError for an exception raised while rendering: its template line and the
    values of the variables that line reads (a TypeError is usually a value of the wrong type)."""
    line = getattr(exc, "lineno", None) or _template_line(exc)
    kind = "" if isinstance(exc, jinja2.TemplateError) else f"{type(exc).__name__}: "
    message = f"template: {kind}{exc}"
    source = body.splitlines()[line - 1] if line and line <= len(body.splitlines()) else ""
    used = [name for name in dict.fromkeys(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", source))
            if name in context and name != "env"]
    if used:
        values = ", ".join(f"{name}={context[name]!r} ({'given' if name in given else 'default'})"
                           for name in used)
        message += f"; with {values}"
        text = [name for name in used if name in given and isinstance(context[name], str)]
        if text:
            message += (f"; values given with --set are read as YAML: {text[0]}=5 is a "
                        f"number, {text[0]}=abc a string")
    return ConfigError(message, file=file, line=line)


def _template_line(exc: BaseException) -> int | None:
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


PLAIN_TAGS = {yaml.MappingNode: "tag:yaml.org,2002:map", yaml.SequenceNode: "tag:yaml.org,2002:seq"}


def _walk(node: yaml.Node, path: str, lines: dict[str, int], scalars: yaml.SafeLoader) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    plain = PLAIN_TAGS.get(type(node))
    if plain is not None and node.tag != plain:      # !!python/object:..., !!set, !foo
        raise ConfigError(f"YAML tag {node.tag!r} is not allowed: write a plain mapping or list",
                          path=path or None, line=node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _walk(key_node, path, {}, scalars)
            if isinstance(key, (dict, list)):
                raise ConfigError("a mapping key must be a scalar", line=key_node.start_mark.line + 1)
            child = f"{path}.{key}" if path else str(key)
            if key in out:
                raise ConfigError(f"duplicate key {key!r}", path=child,
                                  line=key_node.start_mark.line + 1)
            lines[child] = key_node.start_mark.line + 1
            out[key] = _walk(value_node, child, lines, scalars)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_walk(item, f"{path}[{i}]", lines, scalars) for i, item in enumerate(node.value)]
    return _construct_scalar(node, scalars)


# libyaml composes ~15x faster than PyYAML's own parser (0.05 s against 0.8 s for a
# 1000-router line); PyYAML's messages say more (an undefined alias's name), so a
# text libyaml refuses is composed again by PyYAML for the error
FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _compose(text: str) -> yaml.Node | None:
    """The YAML node tree of ``text``; anchors and aliases refused before anything is
    composed (``AliasRefused``). libyaml scans the events and composes; a text it cannot
    parse is composed by PyYAML's own parser, whose messages say more."""
    try:
        for event in yaml.parse(text, Loader=FAST_LOADER):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
                raise AliasRefused(problem=ALIASES_REFUSED, problem_mark=event.start_mark)
        return yaml.compose(text, Loader=FAST_LOADER)
    except AliasRefused:
        raise
    except yaml.YAMLError:
        return yaml.compose(text, Loader=NoAliasLoader)


def _construct_scalar(node: yaml.Node, scalars: yaml.SafeLoader) -> Any:
    try:
        return scalars.construct_object(node, deep=True)
    except yaml.YAMLError as exc:      # an unknown tag (!!python/object, !foo)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"not valid YAML: {problem}", line=node.start_mark.line + 1) from None
    except ValueError as exc:          # !!int abc, a date 2024-99-99, 5000 digits
        raise ConfigError(f"cannot read this value: {str(exc).split(';')[0]}",
                          line=node.start_mark.line + 1) from None


def parse_yaml(text: str, file: str) -> tuple[Any, dict[str, int]]:
    """YAML text to data plus a map from YAML path (``links[0].delay``) to line number."""
    try:
        node = _compose(text)
    except AliasRefused as exc:
        raise alias_error(exc, file) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise ConfigError(f"not valid YAML: {exc.problem}", file=file,
                          line=mark.line + 1 if mark else None) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", file=file) from None
    if node is None:
        return None, {}
    lines: dict[str, int] = {}
    scalars = yaml.SafeLoader("")
    try:
        data = _walk(node, "", lines, scalars)
    except ConfigError as exc:
        exc.file = file
        raise ConfigError(exc.message, file=file, path=exc.path, line=exc.line) from None
    finally:
        scalars.dispose()
    return data, lines


def load(path: str | Path, variables: Mapping[str, Any] | None = None, *,
         use_env: bool = False) -> Document:
    """Read, template and parse one YAML file."""
    return load_text(read(path), str(path), variables, use_env=use_env)


def read(path: str | Path) -> str:
    """The text of a YAML file, or a ConfigError naming it."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("no such file", file=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", file=str(path)) from None


def load_text(text: str, file: str, variables: Mapping[str, Any] | None = None, *,
              use_env: bool = False) -> Document:
    rendered, context = render(text, file, variables or {}, use_env=use_env)
    data, lines = parse_yaml(rendered, file)
    context.pop("env", None)
    return Document(file=file, data=data, lines=lines, text=rendered, variables=context)
