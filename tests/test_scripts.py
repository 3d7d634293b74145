"""The Lua files (src/redis_tasks/lua/): every script loads on the server the suite runs, its
includes and spliced names are resolved, and a mistake in a file fails loudly at import."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis

from redis_tasks import scripts

LUA = Path(scripts.__file__).parent / "lua"


@pytest.mark.parametrize("script", scripts.ALL, ids=lambda s: s.name)
def test_every_script_loads_on_the_server(script: scripts.Script, clean_redis: redis.Redis) -> None:
    assert clean_redis.script_load(script.source) == script.sha
    assert "--- @include" not in script.source and "{{" not in script.source


def test_every_script_file_is_one_the_package_loads() -> None:
    """A file left out of scripts.ALL (or a part never included) would be dead Lua."""
    loaded = {s.name for s in scripts.ALL}
    included = {name for s in scripts.ALL for name in _includes(s.name)}
    files = {str(p.relative_to(LUA).with_suffix("")) for p in LUA.rglob("*.lua")}
    assert files == loaded | included


def _includes(name: str) -> set[str]:
    found = set(scripts.INCLUDE.findall((LUA / f"{name}.lua").read_text()))
    for inner in list(found):
        found |= _includes(inner)
    return found


def test_a_helper_is_included_once_however_many_files_include_it() -> None:
    assert scripts.CLAIM.source.count("local function clock_ms()") == 1
    assert scripts.CLAIM.source.count("local function repaired(") == 1


def test_an_unknown_name_or_an_include_cycle_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    files = {"a": '--- @include "b"\nreturn 1', "b": '--- @include "a"\n', "c": "return {{NOPE}}"}
    monkeypatch.setattr(scripts, "_read", files.__getitem__)
    with pytest.raises(ValueError, match="include cycle: a -> b -> a"):
        scripts.load("a")
    with pytest.raises(ValueError, match=re.escape("names {{NOPE}}")):
        scripts.load("c")


def test_the_score_constants_keep_every_score_exact() -> None:
    """Scores are doubles: the lowest priority's band plus every sequence number must stay
    below 2^53, and promoted due tasks stay within the lower half of their band."""
    assert 200 * scripts.PRIORITY_STEP + scripts.PRIORITY_STEP < 2**53
    assert scripts.DUE_WRAP < scripts.PROMOTED_OFFSET < scripts.PRIORITY_STEP
