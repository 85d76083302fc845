"""Hostile or broken YAML is refused quickly with the usual path-named error, never a traceback.

Each attack goes through the loader in-process and through `integration-sidecar check-config`
(and one through `serve`), which must exit 2 like any other config error.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sidecar.config import ConfigError, load_config, parse_config
from sidecar.config.loader import (
    MAX_CONFIG_BYTES,
    MAX_EXPANDED_NODES,
    MAX_NESTING_DEPTH,
    MAX_SCALAR_CHARS,
)

DIGITS = sys.get_int_max_str_digits()


def _billion_laughs(levels: int = 9, fan_out: int = 10) -> str:
    """The classic alias bomb: each level holds `fan_out` aliases of the level below."""
    lines = ['a0: &a0 ["${LOL}", "lol"]']
    for level in range(1, levels + 1):
        aliases = ", ".join([f"*a{level - 1}"] * fan_out)
        lines.append(f"a{level}: &a{level} [{aliases}]")
    return "\n".join(lines) + "\n"


ATTACKS = {
    "long_integer": "services:\n  cache:\n    type: cache\n    max_keys: " + "9" * 5000 + "\n",
    "deep_sequences": "server: " + "[" * 10_000 + "]" * 10_000 + "\n",
    "deep_mappings": "server: " + "{a: " * 10_000 + "1" + "}" * 10_000 + "\n",
    "billion_laughs": _billion_laughs(),
    "recursive_alias": "server: &loop [*loop]\n",
    "long_string": "server:\n  listen: " + "x" * (MAX_SCALAR_CHARS + 1) + "\n",
}

EXPECTED = {
    "long_integer": (
        "services.cache.max_keys",
        f"integer too long: 5000 digits, at most {DIGITS} (line 4, column 15)",
    ),
    "deep_sequences": (
        "server" + "[0]" * (MAX_NESTING_DEPTH - 1),
        f"nested deeper than {MAX_NESTING_DEPTH} levels (line 1, column {MAX_NESTING_DEPTH + 8})",
    ),
    # The innermost mapping allowed holds its keys one level deeper: the first key is refused.
    "deep_mappings": (
        "server" + ".a" * (MAX_NESTING_DEPTH - 2),
        f"nested deeper than {MAX_NESTING_DEPTH} levels"
        f" (line 1, column {4 * (MAX_NESTING_DEPTH - 2) + 10})",
    ),
    # a0..a4 with their keys come to 34,574 values, each *a4 to 31,111: the third overflows.
    "billion_laughs": (
        "a5[2]",
        f"more than {MAX_EXPANDED_NODES} values once aliases are expanded (line 6, column 20)",
    ),
    "recursive_alias": (
        "server[0]",
        "alias *loop is used inside the value it names (line 1, column 16)",
    ),
    "long_string": (
        "server.listen",
        f"value longer than {MAX_SCALAR_CHARS} characters (line 2, column 11)",
    ),
}


def _refusal(text: str) -> tuple[ConfigError, float]:
    started = time.perf_counter()
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ={"LOL": "lol"}, source="attack.yaml")
    return caught.value, time.perf_counter() - started


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_is_refused_by_path_in_the_usual_format(name: str) -> None:
    error, _ = _refusal(ATTACKS[name])
    assert error.problems == [EXPECTED[name]]
    path, message = EXPECTED[name]
    assert str(error) == f"invalid configuration in attack.yaml:\n  {path}: {message}"


def test_billion_laughs_is_refused_in_well_under_a_second() -> None:
    _, seconds = _refusal(_billion_laughs())
    assert seconds < 0.25


def test_env_expansion_never_walks_alias_copies_past_the_bound() -> None:
    # Six levels (10**6 copies of "${LOL}") ran 11.8 s and took 473 MB before the bound.
    _, seconds = _refusal(_billion_laughs(levels=6))
    assert seconds < 0.25


def test_aliases_and_merge_keys_within_the_bound_still_work() -> None:
    config = parse_config(
        "integration:\n"
        "  retry_policy: &retry {max_retries: 5}\n"
        "services:\n"
        "  base: &base {type: cache, max_keys: 10}\n"
        "  other:\n"
        "    <<: *base\n"
        "    max_keys: 20\n"
        "    retry_policy: *retry\n",
        environ={},
    )
    assert config.integration.retry_policy.max_retries == 5
    assert config.services["other"].max_keys == 20  # type: ignore[union-attr]


def test_the_longest_integer_python_parses_is_accepted() -> None:
    config = parse_config(
        f"services:\n  c: {{type: cache, max_keys: {'9' * DIGITS}}}\n", environ={}
    )
    assert config.services["c"].max_keys == int("9" * DIGITS)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("!!int abc", "cannot read 'abc' as !!int (line 1, column 16)"),
        ('!!int ""', "cannot read '' as !!int (line 1, column 16)"),
        ("!!bool maybe", "cannot read 'maybe' as !!bool (line 1, column 16)"),
        ("!!timestamp soon", "cannot read 'soon' as !!timestamp (line 1, column 16)"),
    ],
)
def test_a_scalar_its_explicit_tag_cannot_read_is_named_by_path(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"server: {{port: {value}}}\n", environ={})
    assert caught.value.problems == [("server.port", message)]


def test_a_document_at_the_nesting_bound_loads() -> None:
    text = "extra: " + "[" * (MAX_NESTING_DEPTH - 1) + "]" * (MAX_NESTING_DEPTH - 1) + "\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ={})
    assert caught.value.problems == [("extra", "unknown field")]


def test_a_scalar_at_the_root_names_the_file() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("9" * 5000 + "\n", environ={}, source="attack.yaml")
    assert str(caught.value) == (
        f"attack.yaml: integer too long: 5000 digits, at most {DIGITS} (line 1, column 1)"
    )


def test_text_over_the_size_bound_is_refused_and_a_lone_surrogate_is_named() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("#" * MAX_CONFIG_BYTES + "\n", environ={}, source="big.yaml")
    assert (
        str(caught.value) == f"config file big.yaml is larger than {MAX_CONFIG_BYTES} bytes (1 MiB)"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config("a: \ud800\n", environ={}, source="s.yaml")
    assert str(caught.value).startswith("invalid YAML in s.yaml: unacceptable character #xd800")


def test_oversized_file_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_text("# padding\n" * (MAX_CONFIG_BYTES // 10 + 1))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems == [
        ("", f"config file {path} is larger than {MAX_CONFIG_BYTES} bytes (1 MiB)")
    ]


# --------------------------------------------------------------------------------------------
# Through the command line
# --------------------------------------------------------------------------------------------


def _cli(*args: str) -> tuple[int, str, float]:
    """Run the command line; returns its exit code, stderr and the CPU seconds it used."""
    started = _children_cpu_seconds()
    done = subprocess.run(
        [sys.executable, "-m", "sidecar", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.returncode, done.stderr, _children_cpu_seconds() - started


def _children_cpu_seconds() -> float:
    # CPU time, not wall time: other processes on a shared machine do not inflate it.
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@pytest.mark.parametrize("name", list(ATTACKS))
def test_check_config_refuses_attack_with_exit_2_and_no_traceback(
    name: str, tmp_path: Path
) -> None:
    path = tmp_path / f"{name}.yaml"
    path.write_text(ATTACKS[name])
    code, stderr, _ = _cli("check-config", str(path))
    config_path, message = EXPECTED[name]
    assert code == 2
    assert "Traceback" not in stderr
    assert stderr == f"invalid configuration in {path}:\n  {config_path}: {message}\n"


def test_check_config_refuses_billion_laughs_as_fast_as_a_good_file(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("services:\n  cache: {type: cache}\n")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(_billion_laughs())
    _, _, baseline = _cli("check-config", str(good))
    code, _, seconds = _cli("check-config", str(bomb))
    assert code == 2
    # Interpreter start-up dominates both runs; the refusal itself adds well under a second.
    assert seconds < baseline + 0.5


def test_serve_refuses_attack_with_exit_2_and_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text(ATTACKS["deep_mappings"])
    code, stderr, _ = _cli("serve", "--config", str(path))
    assert code == 2
    assert "Traceback" not in stderr
    assert stderr.startswith(f"invalid configuration in {path}:\n  server.a.a")


def test_check_config_refuses_an_oversized_file(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_text("# padding\n" * (MAX_CONFIG_BYTES // 10 + 1))
    code, stderr, _ = _cli("check-config", str(path))
    assert (code, stderr) == (
        2,
        f"config file {path} is larger than {MAX_CONFIG_BYTES} bytes (1 MiB)\n",
    )
