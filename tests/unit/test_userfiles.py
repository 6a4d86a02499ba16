"""qbench/userfiles.py: every file a user hands qbench is read with limits. Alias bombs, deep
nesting, duplicate keys, binary and non-regular files are one-line UserFileErrors naming the
file; the cases that would exhaust memory or time run in a subprocess under resource limits,
through each command that reads such a file."""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, ValidationError

from qbench.core.userfiles import (
    MAX_DEPTH,
    MAX_NODES,
    UserFileError,
    describe,
    load_json,
    load_jsonl,
    load_yaml,
    parse_json,
    parse_jsonl,
    parse_yaml,
    read_text,
    shown,
)


def alias_bomb(key: str, under: str | None = None) -> str:
    """Nine nested anchors, a to i (as keys of the section `under`, if given): about 400 bytes
    standing for 9**9 strings; `key: *i`."""
    lines = [f"a: &a [{','.join(['lol'] * 9)}]"]
    lines += [f"{b}: &{b} [{','.join([f'*{a}'] * 9)}]"
              for a, b in zip("abcdefgh", "bcdefghi", strict=True)]
    if under is not None:
        lines = [f"{under}:"] + ["  " + line for line in lines]
    return "\n".join(lines + [f"{key}: *i"]) + "\n"


def refused(text: str) -> str:
    with pytest.raises(UserFileError) as caught:
        parse_yaml(text, "f.yaml")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("f.yaml: ")
    return message.removeprefix("f.yaml: ")


# ------------------------------------------------------------------------------ the file

def test_only_small_regular_utf8_files_are_read(tmp_path):
    def problem(path: Path, **limits) -> str:
        with pytest.raises(UserFileError) as caught:
            read_text(path, "task file", **limits)
        assert caught.value.where == f"task file {path}"
        return caught.value.problem

    assert problem(tmp_path / "absent.yaml") == "not found"
    assert problem(tmp_path) == "is a folder, not a file"
    # a FIFO: test_bombs_and_deep_nesting_are_refused_within_limits_by_the_loader
    big = tmp_path / "big.yaml"
    big.write_text("a: 1\n" * 300)
    assert problem(big, max_bytes=1024) == "larger than 1 KiB, the limit for a task file"
    assert read_text(big, "task file", max_bytes=1500).count("\n") == 300
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"name: x\n\x00\x01\x02")
    assert problem(binary) == "not a text file (byte 8 is NUL): binary?"
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: café\n".encode("latin-1"))
    assert problem(latin) == "not UTF-8 text (byte 9): binary?"
    bom = tmp_path / "bom.yaml"
    bom.write_bytes("\ufeffname: café\n".encode())
    assert load_yaml(bom, "task file") == {"name": "café"}
    unreadable = tmp_path / "locked.yaml"
    unreadable.write_text("a: 1\n")
    unreadable.chmod(0)
    if os.geteuid() != 0:   # root reads it anyway
        assert problem(unreadable) == "cannot read: Permission denied"


# ------------------------------------------------------------------------------ YAML

def test_alias_bomb_is_refused_naming_the_key():
    assert len(alias_bomb("name")) <= 405
    # 9**6 nodes under anchor f (line 6), first reached through name[8][8][8]
    assert refused(alias_bomb("name")) == \
        f"line 6: name[8][8][8]: aliases make more than {MAX_NODES:,} YAML nodes"


def test_aliases_within_the_limit_are_read():
    text = "base: &base {lr: 1.0e-6, seed: 42}\nrun: {<<: *base, seed: 7}\nagain: *base\n"
    assert parse_yaml(text, "f") == {"base": {"lr": 1e-6, "seed": 42},
                                     "run": {"lr": 1e-6, "seed": 7},
                                     "again": {"lr": 1e-6, "seed": 42}}

    def uses(count: int) -> str:   # `count` uses of one 50-item list
        return "x: &x [" + ",".join(["1"] * 50) + "]\ny: [" + ",".join(["*x"] * count) + "]\n"
    assert len(parse_yaml(uses(100), "f")["y"]) == 100
    assert refused(uses(2000)) == f"line 2: y: aliases make more than {MAX_NODES:,} YAML nodes"


def test_an_alias_inside_its_own_anchor_is_refused():
    assert refused("&a [1, *a]") == "line 1: [1]: an alias inside its own anchor"
    assert refused("top:\n  loop: &l {next: *l}\n") == \
        "line 2: top.loop.next: an alias inside its own anchor"


@pytest.mark.parametrize("text", [
    "a: " + "[" * 20_000 + "]" * 20_000,
    "a:\n" + "- " * 20_000 + "x",
    "a: " + "{b: " * 20_000 + "1" + "}" * 20_000,
    "".join(" " * i + f"k{i}:\n" for i in range(200)),
])
def test_deep_nesting_is_refused_without_recursion(text):
    problem = refused(text)
    assert f"nested more than {MAX_DEPTH} deep" in problem or "maximum nesting depth" in problem


def test_nesting_made_deep_by_aliases_is_refused():
    levels = ["l0: &l0 [x]"] + [f"l{i}: &l{i} [*l{i - 1}]" for i in range(1, MAX_DEPTH + 2)]
    assert f"aliases nest it more than {MAX_DEPTH} deep" in refused("\n".join(levels))


def test_too_many_nodes_are_refused_as_they_are_read():
    assert refused("[" + ",".join(["1"] * (MAX_NODES + 5)) + "]") == \
        f"line 1: more than {MAX_NODES:,} YAML nodes"


@pytest.mark.parametrize("text,problem", [
    ("name: a\nkind: score\nname: b\n", "line 3: name: key given twice (first on line 1)"),
    ("columns:\n  image: a\n  image: b\n", "line 3: columns.image: key given twice (first on "
                                           "line 2)"),
    ("items:\n- {x: 1, y: 2, x: 3}\n", "line 2: items[0].x: key given twice (first on line 2)"),
    ("1: a\n1.0: b\n", "line 2: 1.0: key given twice (first on line 1)"),
])
def test_a_key_given_twice_is_refused(text, problem):
    assert refused(text) == problem


@pytest.mark.parametrize("text,problem", [
    ("a: [1, 2\n", "not valid YAML: line 2, column 1: while parsing a flow sequence; did not "
                   "find expected ',' or ']'"),
    ("a: 1\n--- \nb: 2\n", "not valid YAML: line 2, column 1: expected a single document in the "
                           "stream; but found another document"),
    ("a: \x07\n", "not valid YAML: character #x0007 at position 3: control characters are not "
                  "allowed"),
    ("when: 2020-13-45\n", "line 1: '2020-13-45' cannot be read as !!timestamp (month must be "
                           "in 1..12)"),
    ("flag: !!bool maybe\n", "line 1: 'maybe' cannot be read as !!bool"),
    ("n: !!int 0x\n", "line 1: '0x' cannot be read as !!int (invalid literal for int() with "
                      "base 16: '')"),
    ("? [a, b]\n: c\n", "not valid YAML: line 1, column 3: while constructing a mapping; found "
                        "unhashable key"),
    ("run: !!python/name:os.system x\n", "not valid YAML: line 1, column 6: could not determine "
                                         "a constructor for the tag "
                                         "'tag:yaml.org,2002:python/name:os.system'"),
])
def test_invalid_yaml_is_one_line_with_its_place(text, problem):
    assert refused(text) == problem


def test_plain_documents_read_as_safe_load_reads_them():
    import yaml
    text = "a: 1\nb: [x, 2.5, null, true]\nc: {d: '2020-01-01', e: 2020-01-01}\n"
    assert parse_yaml(text, "f") == yaml.safe_load(text)
    assert parse_yaml("", "f") is None and parse_yaml("# only a comment\n", "f") is None


# ------------------------------------------------------------------------------ JSON

def test_json_limits():
    with pytest.raises(UserFileError, match=r"^f.json: image: key given twice in one object$"):
        parse_json('{"image": "a", "image": "b"}', "f.json")
    for depth in (MAX_DEPTH + 1, 20_000):
        with pytest.raises(UserFileError, match=f"nested more than {MAX_DEPTH} deep"):
            parse_json("[" * depth + "]" * depth, "f.json")
    assert parse_json("[" * MAX_DEPTH + "]" * MAX_DEPTH, "f.json") is not None
    with pytest.raises(UserFileError, match="line 2, column 10: Expecting ',' delimiter"):
        parse_json('[{"a": 1},\n {"b": 2 "c": 3}]', "f.json")
    with pytest.raises(UserFileError, match="Exceeds the limit"):
        parse_json("1" * 5000, "f.json")


def test_jsonl_line_numbers_count_blank_lines_and_only_newlines_end_lines(tmp_path):
    path = tmp_path / "p.jsonl"
    # U+2028 is a line break to str.splitlines, not to JSON Lines
    path.write_text('{"image": "a\u2028b"}\n\n{"image": "c"}\n{"image": "d",}\n', encoding="utf-8")
    with pytest.raises(UserFileError) as caught:
        load_jsonl(path, "predictions file")
    assert str(caught.value) == (f"predictions file {path}: line 4: not valid JSON: line 1, "
                                 f"column 15: Expecting property name enclosed in double quotes")
    path.write_text('{"image": "a\u2028b"}\n\n{"image": "c"}\n', encoding="utf-8")
    assert [(row.line, row.value["image"]) for row in load_jsonl(path, "p")] == \
        [(1, "a\u2028b"), (3, "c")]
    assert parse_jsonl('{"a": 1}\n\n  \n[2]', "t") == [(1, {"a": 1}), (4, [2])]
    array = tmp_path / "p.json"
    array.write_text('[\n  {"image": "a"},\n  {"image": "b"}\n]\n')
    assert load_json(array, "predictions file") == [{"image": "a"}, {"image": "b"}]


# ------------------------------------------------------------------------------ pydantic errors

class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rate: float = 1.0
    names: list[str] = []


class Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    inner: Inner = Inner()


def problems(data: object) -> str:
    with pytest.raises(ValidationError) as caught:
        Outer.model_validate(data)
    return describe(caught.value, Outer)


def test_describe_is_one_line_per_key_with_short_values():
    assert problems({"inner": {"rat": 1}}) == \
        "name: missing (required); inner.rat: unknown key; known: rate, names"
    assert problems({"name": "x", "inner": {"names": ["a", 2]}}) == \
        "inner.names[1]: should be a valid string (got 2)"
    huge = "x" * 1_000_000
    line = problems({"name": [huge] * 1000})
    assert line.startswith("name: should be a valid string (got [") and len(line) < 130
    many = problems({"name": "x", **{f"k{i}": i for i in range(50)}})
    assert many.count("unknown key") == 10 and many.endswith("; and 40 more")


def test_shown_is_short_for_any_size_or_nesting():
    nested: list = []
    for _ in range(10_000):
        nested = [nested]
    assert len(shown(nested)) < 100 and len(shown("é" * 10**6)) < 100
    assert shown("short") == "'short'"


# ------------------------------------------------------------------------------ any bytes

YAML_TOKENS = ["a", "1", " ", "-", ":", "[", "]", "{", "}", ",", "&a ", "*a", "&b ", "*b", "!!int ",
               "!!timestamp ", "!!binary ", "!!bool ", "!!set ", "<<: ", "? ", "|", ">", "'", '"',
               "#", "%YAML 1.1", "---", "...", "\n", "\n  ", "\n    ", "\t", "\\", "é", "\x85",
               "2020-13-01", "0x", "1e9999", ".nan", "~", "\ufeff", "!!float ", "!!omap ",
               "!!pairs ", "!!map ", "!!seq ", "!!null ", "!!merge ", "=", "\r", "\x0c",
               "!local ", "12:30:00", "2001-12-14t21:59:43.10-25:00"]


@given(st.lists(st.sampled_from(YAML_TOKENS), max_size=60).map("".join))
def test_any_yaml_text_reads_or_is_one_line_error(text):
    try:
        parse_yaml(text, "f.yaml")
    except UserFileError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("f.yaml: ")


JSON_TOKENS = ['{', '}', '[', ']', ',', ':', '"a"', '"image"', "1", "-", "1e999", "true", "null",
               "NaN", " ", "\n", '"\\u00e9"', '"\\ud800"', "\u2028", "0" * 30]


@given(st.lists(st.sampled_from(JSON_TOKENS), max_size=60).map("".join))
def test_any_json_text_reads_or_is_one_line_error(text):
    for parse in (parse_json, parse_jsonl):
        try:
            parse(text, "f.json")
        except UserFileError as exc:
            assert "\n" not in str(exc) and str(exc).startswith("f.json: ")


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bytes")


@given(data=st.binary(max_size=300))
def test_any_bytes_in_a_file_read_or_are_one_line_error(scratch, data):
    path = scratch / "f.yaml"
    path.write_bytes(data)
    for load in (load_yaml, load_json, load_jsonl):
        try:
            load(path, "user file")
        except UserFileError as exc:
            assert "\n" not in str(exc) and str(exc).startswith(f"user file {path}: ")


# ------------------------------------------------------------------------------ under limits

MEMORY = 1 << 30     # bytes of address space; each bomb took 5-6 GB before
CPU_SECONDS = 60     # the bomb ran 150 s before; importing qbench takes ~5 here


def limited(code: str, cwd: Path, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    """`code` in a fresh interpreter with its memory and CPU time capped (a blocking read is
    ended by the wall-clock timeout)."""
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))
        resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
                          capture_output=True, text=True, timeout=300, preexec_fn=cap,
                          check=False)


def test_bombs_and_deep_nesting_are_refused_within_limits_by_the_loader(tmp_path):
    cases = {"bomb": alias_bomb("name"), "flow": "a: " + "[" * 20_000 + "]" * 20_000,
             "block": "a:\n" + "- " * 20_000 + "x",
             "json": json.dumps({"image": "x"})[:-1] + ', "deep": ' + "[" * 20_000 +
                     "]" * 20_000 + "}"}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
    os.mkfifo(tmp_path / "pipe")   # no writer: a blocking open would wait forever
    result = limited("""
        import sys
        from qbench.core.userfiles import UserFileError, load_json, load_jsonl, load_yaml
        for name, load in [("bomb", load_yaml), ("flow", load_yaml), ("block", load_yaml),
                           ("json", load_json), ("json", load_jsonl), ("pipe", load_yaml)]:
            try:
                load(name, "user file")
                print(name, "READ")
            except UserFileError as exc:
                print(name, exc)
        """, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert len(lines) == 6, result.stdout
    assert lines[0] == (f"bomb user file bomb: line 6: name[8][8][8]: aliases make more than "
                        f"{MAX_NODES:,} YAML nodes")
    assert all("nested more than" in line or "maximum nesting depth" in line
               for line in lines[1:5]), lines
    assert lines[5] == "pipe user file pipe: not a regular file (a pipe, device or socket)"


def test_every_command_refuses_a_bomb_or_deep_file_in_one_line_within_limits(tmp_path):
    """Each reader of a user's file, through the command line, under the resource caps: exit 2
    and one line naming the file, for the alias bomb, 20,000-deep nesting and a FIFO."""
    deep = "[" * 20_000 + "]" * 20_000
    files = {
        "task-bomb.yaml": alias_bomb("name"), "task-deep.yaml": f"name: {deep}\n",
        # anchors under a known key: an unknown-key check must not be what stops it
        "config-bomb.yaml": alias_bomb("data_root", under="models"),
        "config-deep.yaml": f"data_root: {deep}\n",
        "train-bomb.yaml": alias_bomb("output_dir"), "train-deep.yaml": f"output_dir: {deep}\n",
        "train.yaml": "output_dir: out\n",
        "preds-deep.jsonl": '{"image": "a.png", "score": 1}\n{"image": "b.png", "score": ' +
                            deep + "}\n",
        "preds-deep.json": f'[{{"image": "a.png", "score": {deep}}}]',
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    os.mkfifo(tmp_path / "pipe.yaml")
    commands = [
        ({"QBENCH_CONFIG": "pipe.yaml"}, ["list"], "config file pipe.yaml: not a regular file"),
        ({}, ["data", "check", "--tasks", "pipe.yaml"], "task file pipe.yaml: not a regular"),
        ({}, ["data", "check", "--tasks", "task-bomb.yaml"], "task file task-bomb.yaml"),
        ({}, ["data", "check", "--tasks", "task-deep.yaml"], "task file task-deep.yaml"),
        ({"QBENCH_CONFIG": "config-bomb.yaml"}, ["list"], "config file config-bomb.yaml"),
        ({"QBENCH_CONFIG": "config-deep.yaml"}, ["list"], "config file config-deep.yaml"),
        ({}, ["train", "--config", "train-bomb.yaml", "--check"], "training config train-bomb"),
        ({}, ["train", "--config", "train-deep.yaml", "--check"], "training config train-deep"),
        ({}, ["train", "--config", "train.yaml", "--set",
              "lora.r=" + alias_bomb("x").replace("\n", ", ").join("{}")],
         "training config train.yaml: --set lora.r: "),
        ({}, ["run", "--model", "precomputed", "--model-path", "preds-deep.jsonl", "--tasks",
              "koniq"], "predictions file preds-deep.jsonl: line 2: "),
        ({}, ["run", "--model", "precomputed", "--model-path", "preds-deep.json", "--tasks",
              "koniq"], "predictions file preds-deep.json: "),
    ]
    probe = f"""
        import contextlib, io, json, os
        from qbench.cli.main import main
        for env, argv, _ in {commands!r}:
            os.environ.pop("QBENCH_CONFIG", None)
            os.environ.update(env)
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                code = main(argv + (["--output", "out"] if argv[0] == "run" else []))
            print(json.dumps([code, err.getvalue()]), flush=True)
        """
    result = limited(probe, tmp_path, {"QBENCH_DATA_ROOT": str(tmp_path), "COLUMNS": "500"})
    outcomes = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(outcomes) == len(commands), (result.stdout, result.stderr[-2000:])
    for (code, stderr), (_, argv, names) in zip(outcomes, commands, strict=True):
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and "Traceback" not in stderr, (argv, stderr)
        assert names in lines[0], (argv, lines[0])
        assert any(words in lines[0] for words in ("aliases make more than", "nested more than",
                                                   "maximum nesting depth", "not a regular file")
                   ), lines[0]
