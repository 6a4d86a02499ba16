"""Reading the files a user hands qbench: task files, the config file, training configs,
predictions files, sources files. One place, with limits, so that no such file can crash, hang
or exhaust qbench, whatever it holds.

    load_yaml(path, what)    one YAML document            parse_yaml(text, where)   the same, text
    load_json(path, what)    one JSON value               parse_json(text, where)   the same, text
    load_jsonl(path, what)   one JSON value per line,     parse_jsonl(text, where)  the same, text
                             with its line number
    read_text(path, what)    the file as text (what the loaders above read)

`what` names the kind of file in messages ("task file", "config file", "sources file"); every
problem is a `UserFileError` (a ValueError, so the CLI prints it as one line and exits 2) whose
text is `<what> <path>: [line N: ][key: ]problem`. The reading refuses

- anything but a regular file (a FIFO would block forever, a device never ends), files over a
  size cap, binary files (NUL bytes or not UTF-8);
- YAML: more than MAX_NODES nodes counting each alias as the nodes it stands for (a few hundred
  bytes of nested anchors stand for billions), an alias inside its own anchor, nesting deeper
  than MAX_DEPTH (checked while composing, before any recursion could overflow), a key given
  twice in one mapping, tagged values that do not construct (`!!int x`, a month 13);
- JSON: nesting deeper than MAX_DEPTH, a key given twice in one object.

Validation of what was read stays with the caller (pydantic models); `describe` formats a
pydantic ValidationError as one line `key: problem (got value); key: problem`, with the echoed
values cut short by `shown` (and names by `shown_key` / `shown_names`). A new kind of file is

    raw = load_yaml(path, "sources file")            # UserFileError: one line, exit 2
    try:
        sources = Sources.model_validate(raw or {})  # Sources: a pydantic model, extra="forbid"
    except ValidationError as exc:
        raise UserFileError(f"sources file {path}", describe(exc, Sources)) from None
"""
from __future__ import annotations

import json
import os
import reprlib
import stat
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import yaml
from pydantic import BaseModel, ValidationError

MAX_YAML_BYTES = 1 << 20        # settings files are a few kB
MAX_JSON_BYTES = 64 << 20       # a predictions file: about 500,000 rows
MAX_NODES = 100_000             # YAML nodes after aliases: read in seconds at most
MAX_DEPTH = 64                  # nesting, of YAML and JSON alike
MAX_ERRORS = 10                 # validation problems listed in one message


class UserFileError(ValueError):
    """A file (or text) a user gave cannot be used; `where` names it, `problem` says why."""

    def __init__(self, where: str, problem: str):
        super().__init__(f"{where}: {problem}")
        self.where, self.problem = where, problem


class _Refused(Exception):
    """A problem found inside a parse; becomes a UserFileError naming the file."""


# ------------------------------------------------------------------------------ values in messages

_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxdict, _SHORT.maxlist, _SHORT.maxtuple = 2, 4, 4, 4
_SHORT.maxset, _SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 4, 60, 60, 40


def shown(value: Any) -> str:
    """`repr(value)` cut to at most 80 characters, safe for any size or nesting."""
    text = _SHORT.repr(value)
    return text if len(text) <= 80 else text[:79] + "…"


def shown_key(key: Any) -> str:
    """A key or name for a message: as written when short and printable, else `shown`."""
    return key if isinstance(key, str) and len(key) <= 60 and key.isprintable() else shown(key)


def shown_names(names: Iterable[Any], limit: int = 12) -> str:
    """Names for a message, comma-separated: the first `limit`, then how many more."""
    listed = list(names)
    text = ", ".join(shown_key(n) for n in listed[:limit]) or "none"
    return text + (f", … ({len(listed)} in all)" if len(listed) > limit else "")


# ------------------------------------------------------------------------------ the file

def read_text(path: str | os.PathLike[str], what: str, *, max_bytes: int = MAX_YAML_BYTES
              ) -> str:
    """The UTF-8 text of a regular file of at most `max_bytes` (a leading BOM dropped)."""
    where = f"{what} {path}"
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused just below
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise UserFileError(where, "not found") from None
    except OSError as exc:
        raise UserFileError(where, f"cannot read: {exc.strerror or exc}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise UserFileError(where, "is a folder, not a file" if stat.S_ISDIR(mode) else
                                   "not a regular file (a pipe, device or socket)")
    with os.fdopen(fd, "rb") as handle:
        try:
            data = handle.read(max_bytes + 1)   # not st_size: the file may grow meanwhile
        except OSError as exc:
            raise UserFileError(where, f"cannot read: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise UserFileError(where, f"larger than {_size(max_bytes)}, the limit for a {what}")
    if b"\0" in data:
        raise UserFileError(where, f"not a text file (byte {data.index(0)} is NUL): binary?")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserFileError(where, f"not UTF-8 text (byte {exc.start}): binary?") from None


def _size(count: int) -> str:
    return f"{count / (1 << 20):g} MiB" if count >= 1 << 20 else f"{count / 1024:g} KiB"


# ------------------------------------------------------------------------------ YAML

def load_yaml(path: str | os.PathLike[str], what: str, *, max_bytes: int = MAX_YAML_BYTES
              ) -> Any:
    """The YAML document in the file (None when empty); UserFileError naming the file."""
    return parse_yaml(read_text(path, what, max_bytes=max_bytes), f"{what} {path}")


def parse_yaml(text: str, where: str) -> Any:
    """The YAML document in `text` (a command-line value, say), read with the limits of
    load_yaml; `where` names the text in the error."""
    if len(text) > MAX_YAML_BYTES:
        raise UserFileError(where, f"longer than {_size(MAX_YAML_BYTES)}")
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_graph(node, loader)
        return loader.construct_document(node)
    except _Refused as exc:
        raise UserFileError(where, str(exc)) from None
    except yaml.MarkedYAMLError as exc:
        raise UserFileError(where, _yaml_problem(exc)) from None
    except yaml.reader.ReaderError as exc:
        char = exc.character
        code = f"#x{char:04x}" if isinstance(char, int) else shown(char)
        raise UserFileError(where, f"not valid YAML: character {code} at position "
                                   f"{exc.position}: {exc.reason}") from None
    except yaml.YAMLError as exc:
        raise UserFileError(where, f"not valid YAML: {_one_line(str(exc))}") from None
    finally:
        loader.dispose()


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= 200 else line[:200] + "…"


def _yaml_problem(exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    what = "; ".join(_one_line(p) for p in (exc.context, exc.problem) if p)
    return f"not valid YAML: {at}{what}"


if yaml.__with_libyaml__:
    from yaml._yaml import CParser  # where yaml.cyaml takes it from (not re-exported there)

    class _Events(CParser):          # libyaml's parser: events at C speed
        def __init__(self, text: str):
            CParser.__init__(self, text)
else:                                # pragma: no cover (PyYAML built without libyaml)
    class _Events(yaml.reader.Reader, yaml.scanner.Scanner,    # type: ignore[no-redef]
                  yaml.parser.Parser):
        def __init__(self, text: str):
            yaml.reader.Reader.__init__(self, text)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)


class _Loader(yaml.composer.Composer, _Events, yaml.constructor.SafeConstructor,
              yaml.resolver.Resolver):
    """SafeLoader's constructor over events, composed in Python (libyaml's own composer
    recurses in C without a bound) with the depth and node count bounded as they are read."""

    def __init__(self, text: str):
        _Events.__init__(self, text)
        yaml.composer.Composer.__init__(self)
        yaml.constructor.SafeConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)
        self.depth = 0
        self.nodes = 0

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError,
                OverflowError) as exc:
            # what PyYAML's constructors raise for a value they cannot build: `!!bool maybe`,
            # `2020-13-45` (a timestamp), `!!int 0x`, `!!int ''`
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            why = f" ({_one_line(str(exc))})" if type(exc) is ValueError else ""
            raise _Refused(f"{_at(node)}{shown(node.value)} cannot be read as {tag}{why}"
                           ) from None

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if not self.check_event(yaml.AliasEvent):
            self.nodes += 1
            if self.nodes > MAX_NODES:
                raise _Refused(f"{_at(self.peek_event())}more than {MAX_NODES:,} YAML nodes")
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise _Refused(f"{_at(self.peek_event())}nested more than {MAX_DEPTH} deep")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _at(item: yaml.Event | yaml.Node | None) -> str:
    """Where `item` starts, as a message prefix; nothing where that is not known."""
    mark = item.start_mark if item is not None else None
    return f"line {mark.line + 1}: " if mark is not None else ""


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_graph(root: yaml.Node, loader: _Loader) -> None:
    """Refuse what aliases make of the composed nodes: more than MAX_NODES once each alias is
    counted as what it stands for, more than MAX_DEPTH deep, a node inside itself; and a key
    given twice in one mapping. Iterative and memoised: linear in the distinct nodes."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    open_: set[int] = set()       # the nodes on the path from the root to the current one
    stack: list[tuple[yaml.Node, str, bool]] = [(root, "", False)]
    while stack:
        node, path, done = stack.pop()
        ident = id(node)
        if done:
            open_.discard(ident)
            kids = _children(node)
            size[ident] = 1 + sum(size[id(k)] for k in kids)
            depth[ident] = 1 + max((depth[id(k)] for k in kids), default=0)
            if size[ident] > MAX_NODES:
                raise _Refused(f"{_at(node)}{path or 'the document'}: aliases make more than "
                               f"{MAX_NODES:,} YAML nodes")
            if depth[ident] > MAX_DEPTH:
                raise _Refused(f"{_at(node)}{path or 'the document'}: aliases nest it more "
                               f"than {MAX_DEPTH} deep")
            continue
        if ident in size:
            continue
        if ident in open_:
            raise _Refused(f"{_at(node)}{path or 'the document'}: an alias inside its own "
                           f"anchor")
        open_.add(ident)
        stack.append((node, path, True))
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node, name in _keys(node, path, loader):
                stack += [(key_node, name, False), (value_node, name, False)]
        elif isinstance(node, yaml.SequenceNode):
            stack += [(item, f"{path}[{i}]", False) for i, item in enumerate(node.value)]


def _keys(node: yaml.MappingNode, path: str, loader: _Loader
          ) -> Iterator[tuple[yaml.Node, yaml.Node, str]]:
    """The mapping's pairs with the dotted name of each value; a repeated key is refused (PyYAML
    would keep the last silently). Merged keys (`<<: *base`) may be overridden: not checked."""
    seen: dict[Any, int] = {}
    for key_node, value_node in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
            key = loader.construct_object(key_node)
            name = f"{path}.{shown_key(key)}" if path else shown_key(key)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
                seen[key] = line if first is None else first
            except TypeError:    # unhashable: construction refuses it in its own words
                first = None
            if first is not None:
                raise _Refused(f"line {line}: {name}: key given twice (first on line {first})")
        else:
            name = f"{path}.<<" if path else "<<"
        yield key_node, value_node, name


# ------------------------------------------------------------------------------ JSON

class JsonLine(NamedTuple):
    line: int      # 1-based, as an editor shows it
    value: Any


def load_json(path: str | os.PathLike[str], what: str, *, max_bytes: int = MAX_JSON_BYTES
              ) -> Any:
    """The one JSON value in the file; UserFileError naming the file (and line)."""
    return parse_json(read_text(path, what, max_bytes=max_bytes), f"{what} {path}")


def load_jsonl(path: str | os.PathLike[str], what: str, *, max_bytes: int = MAX_JSON_BYTES
               ) -> list[JsonLine]:
    """One JSON value per non-blank line, with its line number; UserFileError naming the file
    and the line."""
    return parse_jsonl(read_text(path, what, max_bytes=max_bytes), f"{what} {path}")


def parse_jsonl(text: str, where: str) -> list[JsonLine]:
    """The JSON values of `text`, one per non-blank line. Lines end at \\n only: JSON text
    may hold U+2028 and the other characters str.splitlines also breaks at."""
    out = []
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            try:
                out.append(JsonLine(number, _parse_json(line)))
            except _Refused as exc:
                raise UserFileError(where, f"line {number}: {exc}") from None
    return out


def parse_json(text: str, where: str) -> Any:
    """The one JSON value in `text`, read with the limits of load_json."""
    try:
        return _parse_json(text)
    except _Refused as exc:
        raise UserFileError(where, str(exc)) from None


def _parse_json(text: str) -> Any:
    try:
        value = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise _Refused(f"not valid JSON: line {exc.lineno}, column {exc.colno}: {exc.msg}"
                       ) from None
    except RecursionError:   # the decoder's own guard, far beyond MAX_DEPTH
        raise _Refused(f"not valid JSON: nested more than {MAX_DEPTH} deep") from None
    except ValueError as exc:   # an integer of more digits than Python converts
        raise _Refused(f"not valid JSON: {_one_line(str(exc))}") from None
    _check_depth(value)
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object's keys, each once (json keeps the last of a repeated key silently)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Refused(f"{shown_key(key)}: key given twice in one object")
        out[key] = value
    return out


def _check_depth(value: Any) -> None:
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if level > MAX_DEPTH:
            raise _Refused(f"nested more than {MAX_DEPTH} deep")
        inner = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack += [(v, level + 1) for v in inner if isinstance(v, (dict, list))]


# ------------------------------------------------------------------------------ pydantic errors

def describe(exc: ValidationError, model: type[BaseModel]) -> str:
    """A validation of `model` as one line: `key: problem (got value); key: problem`, at most
    MAX_ERRORS problems (then how many more)."""
    lines = list(dict.fromkeys(error_line(e, model) for e in exc.errors()))
    more = len(lines) - MAX_ERRORS
    return "; ".join(lines[:MAX_ERRORS]) + (f"; and {more} more" if more > 0 else "")


def error_line(error: Any, model: type[BaseModel]) -> str:
    """One pydantic error as `key: what is wrong (got value)`; an unknown key lists the known
    ones of its section."""
    loc = tuple(error["loc"])
    where = _where(loc)
    if error["type"] == "extra_forbidden":
        parent = _section(model, loc[:-1])
        known = f"; known: {', '.join(parent.model_fields)}" if parent else ""
        return f"{where}: unknown key{known}"
    if error["type"] == "missing":
        return f"{where}: missing (required)"
    message = error["msg"].removeprefix("Value error, ").replace("Input should", "should")
    if not where:
        return message
    if error["type"] in ("value_error", "assertion_error") or isinstance(error["input"], dict):
        return f"{where}: {message}"
    return f"{where}: {message} (got {shown(error['input'])})"


def _where(loc: tuple[Any, ...]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{shown_key(part)}"
                   for part in loc).removeprefix(".")


def _section(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that the mapping at `loc` is read into (for 'known keys')."""
    cls: type[BaseModel] | None = model
    for part in loc:
        if cls is None:
            return None
        if isinstance(part, int):
            continue
        field = cls.model_fields.get(part)
        # a mapping or list of models (dict[str, list[Source]]): the keys and indexes between
        # here and the model's own keys are skipped with the model found inside
        cls = _model_in(field.annotation) if field is not None else (
            cls if cls is not model and part not in cls.model_fields else None)
    return cls


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model an annotation holds (itself, or inside Optional/list/dict), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        if (found := _model_in(arg)) is not None:
            return found
    return None


__all__ = ["MAX_DEPTH", "MAX_JSON_BYTES", "MAX_NODES", "MAX_YAML_BYTES", "JsonLine",
           "UserFileError", "describe", "error_line", "load_json", "load_jsonl", "load_yaml",
           "parse_json", "parse_jsonl", "parse_yaml", "read_text", "shown", "shown_key",
           "shown_names"]
