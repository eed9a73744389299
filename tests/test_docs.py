"""The README is kept in step with the code (as sqlite-utils does with its docs): its options
table equals each script's --help, every command it shows runs with options that exist, every
error it quotes is one the code can print, its summary is what etl.py prints on the sample,
its file map names every module, and it stays short."""
import ast
import re
import subprocess
import sys

import pytest

import etl
from conftest import ROOT

README = (ROOT / "README.md").read_text()
SCRIPTS = ("create_tables.py", "etl.py", "analytics.py", "setup_cluster.py", "teardown_cluster.py")
COMMON = {"--help", "--config", "--verbose"}  # every script's, said once above the table


def help_options(script):
    out = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    # an option starts its line two spaces in; a wrapped help line further ("--to, both included")
    return set(re.findall(r"^  (?:-\w, )?(--[a-z][a-z-]*)", out, re.M)) - COMMON


def code_blocks(text):
    return re.findall(r"```[a-z]*\n(.*?)```", text, re.S)


def test_readme_is_short():
    assert len(README.encode()) <= 12_000, "README.md over 12 KB: move details to docs/ or bench/README.md"


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_says_the_scripts_first_paragraph_whole(script):
    """Not its first line alone: setup_cluster.py's --help stopped at "an IAM role that can read"."""
    out = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    doc = ast.get_docstring(ast.parse((ROOT / script).read_text()))
    assert " ".join(doc.split("\n\n")[0].split()) in " ".join(out.split())


@pytest.mark.parametrize("script", SCRIPTS)
def test_options_table_lists_exactly_the_scripts_options(script):
    row = re.search(rf"^\| `{re.escape(script)}` \|(.*)\|$", README, re.M)
    assert row, f"README's options table has no row for {script}"
    assert set(re.findall(r"`(--[a-z][a-z-]*)", row.group(1))) == help_options(script)


def test_every_command_shown_uses_options_that_exist():
    shown = [line for block in code_blocks(README) for line in block.splitlines()
             if re.search(r"\b\w+\.py\b", line) and not line.lstrip().startswith("#")]
    assert shown
    for line in shown:
        command = line.split("#")[0]
        for script in re.findall(r"(\w+\.py)\b", command):
            assert (ROOT / script).is_file(), line
            if script in SCRIPTS:
                assert set(re.findall(r"(--[a-z][a-z-]*)", command)) <= help_options(script) | COMMON, line


LITERAL_MIN = 12  # characters of its own text a string needs to identify a message


def first_lines_printed():
    """The first line of every string in the code, as a regex: an f-string's {...} match anything.
    Only strings with LITERAL_MIN characters of their own: f"{x}" matched every message."""
    patterns = []
    for path in ROOT.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            values = node.values if isinstance(node, ast.JoinedStr) else [node] \
                if isinstance(node, ast.Constant) and isinstance(node.value, str) else []
            parts, literal = [], 0
            for v in values:
                if not isinstance(v, ast.Constant):
                    parts.append(".+")
                    continue
                parts.append(re.escape(v.value.split("\n")[0]))
                literal += len(v.value.split("\n")[0])
                if "\n" in v.value:
                    break
            if literal >= LITERAL_MIN:
                patterns.append(re.compile("".join(parts)))
    return patterns


def test_every_error_quoted_is_one_the_code_prints():
    quoted = re.findall(r"^\s*\w+\.py: error: (.+)$", README, re.M)
    assert quoted, "README quotes no error message"
    patterns = first_lines_printed()
    assert not any(p.fullmatch("the moon is made of cheese, said no code") for p in patterns)
    for message in quoted:
        assert any(p.fullmatch(message) for p in patterns), f"no code prints: {message}"


def test_summary_shown_is_what_etl_prints_on_the_sample(warehouse):
    shown = next(b for b in code_blocks(README) if b.startswith("run "))
    shown = shown[shown.index("\nstep ") + 1:]
    printed = etl.summary(etl.run_etl(warehouse))
    printed = printed[printed.index("\nstep ") + 1:]
    seconds = re.compile(r"^(\S+(?: \S+)?)\s+\d+\.\d\d", re.M)  # they vary from run to run

    def lines(text):
        return [line.rstrip() for line in seconds.sub(r"\1", text).strip().splitlines()]
    assert lines(printed) == lines(shown)


def test_file_map_names_every_module_and_only_files_that_exist():
    mapped = set(re.findall(r"^\| (.+?) \| .+ \|$", README.split("## Layout", 1)[1].split("\n## ", 1)[0], re.M))
    named = {name.rstrip("/") for cell in mapped for name in re.findall(r"`([^`]+)`", cell)}
    for name in named:
        assert (ROOT / name).exists(), name
    modules = {p.name for p in ROOT.glob("*.py")}
    assert modules <= named, f"not in README's file map: {sorted(modules - named)}"


def test_links_point_at_files_that_exist():
    for target in re.findall(r"\]\((?!https?://)([^)#]+)\)", README):
        assert (ROOT / target).exists(), target
