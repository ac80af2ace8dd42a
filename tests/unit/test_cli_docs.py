"""lxcsm's man page, bash completion and --version (tools/cli_docs.py, engine/cli/__init__.py).

The man page and the completion are generated from the argument parsers and
committed; these tests fail when a parser changed and tools/cli-docs was not run
again, and check what a user gets from each: groff's rendering, and bash's
completions from the real script.
"""

from __future__ import annotations

import configparser
import importlib.metadata
import shutil
import subprocess
import sys

import pytest

from lxcsm.engine import __version__
from tests.integration.harness import LXCSM
from tools import cli_docs

STALE = "out of date: run tools/cli-docs (with .venv/bin/python) and commit what it writes"


def test_the_committed_man_page_is_what_the_parsers_say():
    assert cli_docs.MANUAL.read_text() == cli_docs.manual(), STALE


def test_the_committed_completion_is_what_the_parsers_say():
    assert cli_docs.COMPLETION.read_text() == cli_docs.completion(), STALE


def test_every_flag_of_every_command_is_on_the_man_page_and_completes():
    page, script = cli_docs.MANUAL.read_text(), cli_docs.COMPLETION.read_text()
    common = page.split(".SH COMMON OPTIONS")[1]
    for name, _module, parser in cli_docs.parsers():
        section = page.split(f'.SS "lxcsm {cli_docs.roff(name)}"')[1].split(".SS ")[0]
        flags = script.split(f"\n        {name})\n")[1].split("\n            ;;")[0].split('flags="')[1].split('"')[0]
        for action in parser._actions:
            for option in action.option_strings:
                shown = f"\\fB{cli_docs.roff(option)}\\fR"
                assert shown in (common if action not in cli_docs.documented(parser) else section), (name, option)
                assert option in flags.split(), (name, option)


def test_every_option_of_the_drop_in_commands_says_what_it_does():
    missing = [(name, action.option_strings)
               for name, _module, parser in cli_docs.parsers() if name in ("start", "plan", "continue", "stop")
               for action in cli_docs.documented(parser) if action.option_strings and not action.help]
    assert missing == []


@pytest.mark.skipif(shutil.which("groff") is None, reason="no groff")
def test_groff_renders_the_page_without_a_warning():
    rendered = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-P", "-cbou", str(cli_docs.MANUAL)],
                              capture_output=True, text=True, check=True)
    assert rendered.stderr == ""
    assert "lxcsm stop [OPTIONS] [NAME]" in rendered.stdout


def complete(*words: str) -> list[str]:
    """What bash offers for `lxcsm WORDS...`, the last word being the one completed."""
    script = (f'source {cli_docs.COMPLETION}; COMP_WORDS=(lxcsm "$@"); COMP_CWORD=$#; _lxcsm;'
              ' printf "%s\\n" "${COMPREPLY[@]}"')
    result = subprocess.run(["bash", "-c", script, "bash", *words], capture_output=True, text=True, check=True)
    assert result.stderr == ""
    return sorted(filter(None, result.stdout.split("\n")))


def test_bash_completes_commands_and_flags():
    assert complete("st") == ["start", "stop"]
    assert complete("stop", "--no") == ["--nokill", "--nolock", "--nowait"]
    assert complete("start", "-l", "TR") == ["TRACE"]
    assert complete("graph", "--format", "s") == ["svg"]
    assert complete("stop", "-t", "") == []


def test_bash_completes_the_containers_of_the_lxcpath_given(tmp_path):
    for name in ("web", "db", "no-config"):
        (tmp_path / name).mkdir()
    for name in ("web", "db"):
        (tmp_path / name / "config").write_text("")
    assert complete("stop", "-P", str(tmp_path), "") == ["db", "web"]
    assert complete("start", "-P", str(tmp_path), "-n", "w") == ["web"]
    assert complete("start", f"--lxcpath={tmp_path}", "-d", "d") == ["db"]


def test_version_is_the_package_version():
    declared = configparser.ConfigParser()
    declared.read(cli_docs.ROOT / "setup.cfg")
    assert declared["metadata"]["version"] in (__version__, "attr: lxcsm.engine.__version__")
    assert importlib.metadata.version("lxcsm") == __version__   # what pip installed


@pytest.mark.parametrize("argv", [["--version"], ["start", "--version"], ["stop", "--version"]])
def test_version_flag(argv):
    result = subprocess.run([*LXCSM, *argv], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (0, __version__ + "\n", "")


def test_cli_docs_check_says_whether_the_files_are_current(tmp_path, monkeypatch):
    monkeypatch.setattr(cli_docs, "MANUAL", tmp_path / "lxcsm.1")
    monkeypatch.setattr(cli_docs, "COMPLETION", tmp_path / "lxcsm")
    assert cli_docs.main(["--check"]) == 1
    assert cli_docs.main([]) == 0
    assert cli_docs.main(["--check"]) == 0
    assert sys.modules["tools.cli_docs"] is cli_docs
