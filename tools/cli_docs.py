"""lxcsm's man page and bash completion, generated from its argument parsers.

    .venv/bin/python tools/cli-docs            write share/man/man1/lxcsm.1 and
                                              share/bash-completion/completions/lxcsm
    .venv/bin/python tools/cli-docs --check    exit 1 if either differs from what the parsers say

Both files are generated, so a flag added to a subcommand cannot be missing from
them: tests/unit/test_cli_docs.py fails until this tool has been run again.  They
live under share/ as they would under PREFIX/share, which is also where an install
copies them.  What no parser knows (the description, exit statuses, files) is the
prose below.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lxcsm.engine import __version__
from lxcsm.engine.cli import DESCRIPTION, SUBCOMMANDS, parser_for
from lxcsm.engine.cli.options import DEFAULT_LXCPATH

ROOT = Path(__file__).resolve().parent.parent
MANUAL = ROOT / "share/man/man1/lxcsm.1"
COMPLETION = ROOT / "share/bash-completion/completions/lxcsm"

# What every parser has; documented once, under COMMON OPTIONS.
COMMON = ("-h", "--version")
# A value's metavar -> what completes it.
CONTAINER_METAVARS = {"NAME"}
DIRECTORY_METAVARS = {"LXCPATH"}
FILE_METAVARS = {"FILE", "RCFILE", "LOGFILE", "LXC_TRACE", "LXCSM_LOG"}


def _metavar_words() -> dict[str, list[str]]:
    """Values a metavar stands for that lxcsm itself knows: log levels, and the states
    --break-at and `explain` take (monitor:STATE and child:STATE too)."""
    from lxcsm.engine.log import Level
    from lxcsm.engine.start.machine import CHILD_STATES, MONITOR_STATES

    states = sorted({*MONITOR_STATES, *CHILD_STATES, *(f"monitor:{s}" for s in MONITOR_STATES),
                     *(f"child:{s}" for s in CHILD_STATES)})
    return {"LEVEL": [level.name for level in Level], "STATE": states}

DESCRIPTION_TEXT = f"""\
lxcsm starts LXC 5 containers with lxc\\-start's start sequence, written as two explicit
state machines: the monitor, which stays on the host, and the container's child, which
sets the container up and executes its init. The states can be listed, explained,
drawn and paused at.
.PP
It is meant as a drop\\-in for LXC's own tools: \\fBlxcsm start\\fR takes lxc\\-start's
options, \\fBlxcsm stop\\fR lxc\\-stop's with the same meanings and exit statuses, and the
containers it starts answer LXC's command protocol, so lxc\\-info, lxc\\-wait, lxc\\-stop,
lxc\\-attach and lxc\\-console work on them.
.PP
A container is named by \\fINAME\\fR or \\fB\\-n\\fR \\fINAME\\fR, and lives in
\\fILXCPATH\\fR/\\fINAME\\fR (\\fB\\-P\\fR \\fILXCPATH\\fR, default {DEFAULT_LXCPATH}).
"""

EXIT_STATUS_TEXT = """\
0 on success, 1 on a failure (one line on standard error says what failed), 2 on
a command line that cannot be used.
.PP
\\fBlxcsm start \\-F\\fR exits with init's exit status, or 128 plus the signal number
if init was killed by a signal.
.PP
\\fBlxcsm stop\\fR exits as lxc\\-stop does: 0 when the container stopped (or, with
\\fB\\-r\\fR, runs again; with \\fB\\-t 0\\fR or \\fB\\-W\\fR, when the signal was sent), 1 when it
did not or the command line cannot be used, and 2 when the container is not running.
.PP
\\fBlxcsm autostart\\fR exits as lxc\\-autostart does: 0 when every container it picked was
done (or needed nothing), 1 when all of them failed or the command line cannot be used, and
2 when some failed.
"""

FILES_TEXT = f"""\
.TP
.IR LXCPATH / NAME /config
the container's configuration (LXC's format, see \\fBlxc.container.conf\\fR(5)),
unless \\fB\\-f\\fR names another; \\fILXCPATH\\fR is {DEFAULT_LXCPATH} unless \\fB\\-P\\fR says otherwise
.TP
.IR LXCPATH / NAME /lxcsm\\-last\\-start.log
the events of the last start, kept when it failed; \\fBlxcsm explain\\-failure\\fR reads it
"""

SEE_ALSO = ("lxc-start(1)", "lxc-stop(1)", "lxc-autostart(1)", "lxc-info(1)", "lxc-attach(1)", "lxc-console(1)",
            "lxc-wait(1)", "lxc.container.conf(5)")


def parsers() -> list[tuple[str, object, argparse.ArgumentParser]]:
    """(name, module, parser) of every subcommand, in `lxcsm --help`'s order."""
    return [(name, *parser_for(name)) for name in SUBCOMMANDS]


def documented(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The parser's arguments, without those every parser has."""
    return [action for action in parser._actions if not set(action.option_strings) & set(COMMON)]


def metavar(action: argparse.Action) -> str:
    if action.metavar is not None:
        return action.metavar
    if action.choices is not None:
        return "{" + ",".join(map(str, action.choices)) + "}"
    return action.dest.upper()


def takes_value(action: argparse.Action) -> bool:
    return action.nargs != 0


def help_text(action: argparse.Action, parser: argparse.ArgumentParser) -> str:
    """The help string with argparse's %(...)s filled in, as --help shows it."""
    if not action.help:
        return ""
    values = {key: value for key, value in vars(action).items() if value is not argparse.SUPPRESS}
    if values.get("choices") is not None:
        values["choices"] = ", ".join(map(str, values["choices"]))
    return action.help % dict(values, prog=parser.prog)


# --- the man page ------------------------------------------------------------------

def roff(text: str) -> str:
    """Plain text as roff: backslashes and minus signs escaped, no line taken for a request."""
    escaped = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line[:1] in (".", "'") else line for line in escaped.splitlines())


def _synopsis(name: str, module, parser: argparse.ArgumentParser) -> str:
    words = [f"\\fBlxcsm {roff(name)}\\fR"]
    if any(action.option_strings for action in documented(parser)):
        words.append("[\\fIOPTIONS\\fR]")
    for action in documented(parser):
        if not action.option_strings:
            word = f"\\fI{roff(metavar(action))}\\fR"
            words.append(f"[{word}]" if action.nargs == "?" else word)
    if getattr(module, "TAKES_COMMAND", False):
        words.append("[\\fB\\-\\-\\fR \\fICOMMAND\\fR [\\fIARG\\fR...]]")
    return " ".join(words)


def _option_entry(action: argparse.Action, parser: argparse.ArgumentParser) -> str:
    names = []
    for option in action.option_strings:
        entry = f"\\fB{roff(option)}\\fR"
        if takes_value(action):
            entry += f" \\fI{roff(metavar(action))}\\fR"
        names.append(entry)
    return f".TP\n{', '.join(names)}\n{roff(help_text(action, parser))}"


def manual() -> str:
    """The roff source of lxcsm(1)."""
    out = [
        f'.TH LXCSM 1 "" "lxcsm {__version__}" "User Commands"',
        ".\\\" Generated by tools/cli-docs from lxcsm's argument parsers: edit those, then run it again.",
        ".SH NAME",
        f"lxcsm \\- {roff(DESCRIPTION[0].lower() + DESCRIPTION[1:].rstrip('.'))}",
        ".SH SYNOPSIS",
        "\\fBlxcsm\\fR \\fICOMMAND\\fR [\\fIOPTIONS\\fR] [\\fINAME\\fR]"
        " [\\fB\\-\\-\\fR \\fICOMMAND\\fR [\\fIARG\\fR...]]",
        ".br",
        "\\fBlxcsm\\fR \\fB\\-\\-help\\fR | \\fB\\-\\-version\\fR",
        ".SH DESCRIPTION",
        DESCRIPTION_TEXT.rstrip("\n"),
        ".SH COMMANDS",
    ]
    for name, module, parser in parsers():
        out += [f'.SS "lxcsm {roff(name)}"', _synopsis(name, module, parser), ".PP", roff(module.SUMMARY) + "."]
        for action in documented(parser):
            if action.option_strings:
                out.append(_option_entry(action, parser))
            elif action.help:
                out.append(f".TP\n\\fI{roff(metavar(action))}\\fR\n{roff(help_text(action, parser))}")
        if parser.epilog:
            out += [".PP", roff(parser.epilog)]
    out += [
        ".SH COMMON OPTIONS",
        "Every command also takes these.",
        ".TP\n\\fB\\-h\\fR, \\fB\\-\\-help\\fR\nprint the command's options and exit",
        f".TP\n\\fB\\-\\-version\\fR\nprint lxcsm's version ({roff(__version__)}) and exit,"
        " as LXC's tools print theirs",
        ".SH EXIT STATUS",
        EXIT_STATUS_TEXT.rstrip("\n"),
        ".SH FILES",
        FILES_TEXT.rstrip("\n"),
        ".SH SEE ALSO",
        ",\n".join(f"\\fB{roff(page.split('(')[0])}\\fR({page.split('(')[1]}" for page in SEE_ALSO),
    ]
    return "\n".join(out) + "\n"


# --- bash completion ---------------------------------------------------------------

def _words(items) -> str:
    return " ".join(sorted(items))


def _value_cases(actions: list[argparse.Action]) -> list[str]:
    """`case "$prev"` branches: what completes the value of each option that takes one."""
    kinds: dict[str, list[str]] = {}
    known = _metavar_words()
    for action in actions:
        if not (action.option_strings and takes_value(action)):
            continue
        if action.choices is not None:
            kind = f'words "{_words(map(str, action.choices))}"'
        elif metavar(action) in known:
            kind = f'words "{_words(known[metavar(action)])}"'
        elif metavar(action) in CONTAINER_METAVARS:
            kind = "containers"
        elif metavar(action) in DIRECTORY_METAVARS:
            kind = "directories"
        elif metavar(action) in FILE_METAVARS:
            kind = "files"
        else:
            kind = "nothing"
        kinds.setdefault(kind, []).extend(action.option_strings)
    return [f"                {'|'.join(options)}) _lxcsm_complete {kind}; return ;;"
            for kind, options in sorted(kinds.items())]


def _positional_kind(parser: argparse.ArgumentParser) -> str:
    positionals = [metavar(action) for action in documented(parser) if not action.option_strings]
    if not positionals:
        return "nothing"
    if positionals[0] in CONTAINER_METAVARS:
        return "containers"
    if positionals[0] in _metavar_words():
        return f'"words" "{_words(_metavar_words()[positionals[0]])}"'
    return "files" if positionals[0] in FILE_METAVARS else "nothing"


def completion() -> str:
    """The bash completion script for lxcsm."""
    branches = []
    for name, _module, parser in parsers():
        options = [option for action in parser._actions for option in action.option_strings]
        cases = _value_cases(parser._actions)
        branches.append("\n".join([
            f"        {name})",
            '            case $prev in',
            *cases,
            '            esac',
            f'            flags="{_words(options)}"',
            f'            positional=({_positional_kind(parser)})',
            "            ;;",
        ]))
    return COMPLETION_TEMPLATE.format(
        default_lxcpath=DEFAULT_LXCPATH,
        commands=" ".join(SUBCOMMANDS),
        branches="\n".join(branches),
    )


COMPLETION_TEMPLATE = """\
# bash completion for lxcsm                                   -*- shell-script -*-
# Generated by tools/cli-docs from lxcsm's argument parsers: edit those, then run it again.

# The containers of the LXCPATH the command line names (-P), else {default_lxcpath}:
# the directories in it that hold a config.
_lxcsm_containers()
{{
    local lxcpath={default_lxcpath} i config
    for ((i = 2; i < COMP_CWORD; i++)); do
        case ${{COMP_WORDS[i]}} in
            -P | --lxcpath) lxcpath=${{COMP_WORDS[i + 1]}} ;;
            --lxcpath=*) lxcpath=${{COMP_WORDS[i]#--lxcpath=}} ;;
        esac
    done
    for config in "$lxcpath"/*/config; do
        [[ -f $config ]] || continue
        config=${{config%/config}}
        printf '%s\\n' "${{config##*/}}"
    done
}}

_lxcsm_complete()
{{
    local IFS=$'\\n'
    case $1 in
        containers) COMPREPLY=($(compgen -W "$(_lxcsm_containers)" -- "$cur")) ;;
        directories) COMPREPLY=($(compgen -d -- "$cur")) ;;
        files) COMPREPLY=($(compgen -f -- "$cur")) ;;
        words) IFS=' ' COMPREPLY=($(compgen -W "$2" -- "$cur")) ;;
        *) COMPREPLY=() ;;
    esac
}}

_lxcsm()
{{
    local cur=${{COMP_WORDS[COMP_CWORD]}} prev=${{COMP_WORDS[COMP_CWORD - 1]}}
    local flags positional i
    if ((COMP_CWORD == 1)); then
        _lxcsm_complete words "{commands} --help --version"
        return
    fi
    for ((i = 2; i < COMP_CWORD; i++)); do
        if [[ ${{COMP_WORDS[i]}} == -- ]]; then    # init's command line, as the container will see it
            COMPREPLY=($(compgen -f -- "$cur"))
            return
        fi
    done
    case ${{COMP_WORDS[1]}} in
{branches}
        *) return ;;
    esac
    if [[ $cur == -* ]]; then
        _lxcsm_complete words "$flags"
    else
        _lxcsm_complete "${{positional[@]}}"
    fi
}}
complete -F _lxcsm lxcsm
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/cli-docs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only say whether the files are up to date")
    args = parser.parse_args(argv)
    stale = []
    for path, text in ((MANUAL, manual()), (COMPLETION, completion())):
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if args.check and stale:
        print(f"cli-docs: out of date: {', '.join(map(str, stale))} (run tools/cli-docs)", file=sys.stderr)
        return 1
    for path in stale:
        print(f"cli-docs: wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
