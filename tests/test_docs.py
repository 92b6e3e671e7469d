"""The docs stay true to the code: settings, check ids, links, commands and code examples."""

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.core.management import get_commands, load_command_class
from django.template import engines
from django.utils.module_loading import import_string

from tiktok_tracking import conf

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
SETTINGS_PAGE = DOCS / "settings.md"
CHECKS_MODULE = ROOT / "tiktok_tracking" / "checks.py"
APP_LABEL = "tiktok_tracking"

PYTHON_LANGUAGES = frozenset({"python", "py"})
TEMPLATE_LANGUAGES = frozenset({"django", "html+django"})
SHELL_LANGUAGES = frozenset({"sh", "shell", "bash", "console"})

# A fence may be indented (inside a list item); its info string names the language.
FENCE = re.compile(r"^(?P<indent>[ ]*)(?P<marker>`{3,}|~{3,})(?P<info>.*)$")
HEADING = re.compile(r"^#{1,6}[ \t]+(?P<text>.+?)(?:[ \t]+#+)?[ \t]*$")
INLINE_CODE = re.compile(r"(`+)(?P<code>.+?)\1")
INLINE_LINK = re.compile(r"\[[^\]]*\]\(\s*<?(?P<target>[^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
LINK_DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(?P<target>[^\s>]+)>?")
URL_SCHEME = re.compile(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*:|//)")
CHECK_ID = re.compile(rf"\b{APP_LABEL}\.(?P<id>[EWCI]\d{{3}})\b")
CHECK_ID_LITERAL = re.compile(r"[EWCI]\d{3}")
SETTING_HEADING = re.compile(r"^### `(?P<name>[A-Z][A-Z0-9_]*)`$")
DEFAULT_LINE = re.compile(r"^- Default: (?P<value>.+)$")
BACKTICKED = re.compile(r"^`(?P<literal>[^`]+)`")
COMMAND_USE = re.compile(r"\b(?P<command>tiktok_[a-z_]+)\b(?P<rest>[^\n`|]*)")
LONG_OPTION = re.compile(r"(?<![\w-])(?P<option>--[a-z][a-z0-9-]*)")


# --- A small Markdown reader: fences, prose, headings, links -----------------------------------


@dataclass(frozen=True)
class CodeBlock:
    path: Path
    line: int
    language: str
    text: str

    @property
    def where(self):
        return f"{_shown(self.path)}:{self.line}"


@dataclass(frozen=True)
class Page:
    """A Markdown file split into prose lines ``(line number, text)`` and fenced code blocks."""

    path: Path
    prose: tuple
    blocks: tuple


def _shown(path):
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def read_page(path):
    """The page at ``path``; an unclosed fence is an error naming the line it opens on."""
    prose, blocks = [], []
    fence = None  # (marker, indent, language, first line number, lines)
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if fence is None:
            match = FENCE.match(line)
            if match and not (match["marker"][0] == "`" and "`" in match["info"]):
                info = match["info"].strip().split()
                language = info[0].lower() if info else ""
                fence = (match["marker"], len(match["indent"]), language, number, [])
            else:
                prose.append((number, line))
            continue
        marker, indent, language, start, lines = fence
        stripped = line.strip()
        if stripped and set(stripped) == {marker[0]} and len(stripped) >= len(marker):
            text = "\n".join(lines) + "\n"
            blocks.append(CodeBlock(path, start, language, text))
            fence = None
        else:
            # The block's lines lose the fence's own indentation, as Markdown does.
            lines.append(line[indent:] if line[:indent].strip() == "" else line.lstrip())
    if fence is not None:
        raise ValueError(f"{_shown(path)}:{fence[3]}: code fence is never closed")
    return Page(path, tuple(prose), tuple(blocks))


def without_inline_code(text):
    return INLINE_CODE.sub("", text)


def inline_code_spans(page):
    for number, line in page.prose:
        for match in INLINE_CODE.finditer(line):
            yield number, match["code"]


def link_targets(page):
    """``(line number, target)`` of every inline link, image and link definition in prose."""
    for number, line in page.prose:
        text = without_inline_code(line)
        definition = LINK_DEFINITION.match(text)
        if definition:
            yield number, definition["target"]
            continue
        for match in INLINE_LINK.finditer(text):
            yield number, match["target"]


def github_slug(heading):
    """The anchor GitHub gives a heading: lowercase, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page):
    """The anchors of the page's headings, numbered as GitHub numbers repeated ones."""
    seen = {}
    found = set()
    for _number, line in page.prose:
        match = HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match["text"])
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def link_problem(page, target, root):
    """Why ``target`` (a link on ``page``) is broken, or None if it resolves."""
    if URL_SCHEME.match(target):
        return None
    path_part, _, fragment = target.partition("#")
    resolved = (page.path.parent / path_part).resolve() if path_part else page.path
    if not resolved.is_relative_to(root.resolve()):
        return "points outside the repository"
    if not resolved.exists():
        return "no such file"
    if fragment and resolved.suffix == ".md" and fragment not in anchors(read_page(resolved)):
        return f"no heading with the anchor #{fragment}"
    return None


def broken_links(paths, root=ROOT):
    """``path:line: target (why)`` for every relative link of ``paths`` that does not resolve."""
    problems = []
    for path in paths:
        page = read_page(path)
        for number, target in link_targets(page):
            problem = link_problem(page, target, root)
            if problem:
                problems.append(f"{_shown(path)}:{number}: {target} ({problem})")
    return problems


def doc_pages():
    return sorted(DOCS.rglob("*.md"))


def all_pages():
    return [README, *doc_pages()]


def doc_blocks(languages):
    return [
        block
        for path in all_pages()
        for block in read_page(path).blocks
        if block.language in languages
    ]


# --- What the code defines ---------------------------------------------------------------------


def check_ids_in_code():
    """Every check id written in checks.py, such as ``tiktok_tracking.E001``."""
    tree = ast.parse(CHECKS_MODULE.read_text(encoding="utf-8"))
    return {
        f"{APP_LABEL}.{node.value}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and CHECK_ID_LITERAL.fullmatch(node.value)
    }


def app_commands():
    return sorted(name for name, app in get_commands().items() if app == APP_LABEL)


def command_options(name):
    parser = load_command_class(APP_LABEL, name).create_parser("manage.py", name)
    return {option for action in parser._actions for option in action.option_strings}


def documented_settings():
    """``{name: [lines of its section]}`` from the settings page's ``### `NAME` `` headings."""
    sections = {}
    current = None
    for _number, line in read_page(SETTINGS_PAGE).prose:
        if HEADING.match(line):
            match = SETTING_HEADING.match(line)
            current = match["name"] if match else None
            if current is not None:
                sections[current] = []
        elif current is not None:
            sections[current].append(line)
    return sections


def documented_default(lines):
    """The text after ``- Default:`` in a setting's section, or None."""
    for line in lines:
        match = DEFAULT_LINE.match(line)
        if match:
            return match["value"]
    return None


def default_problem(name, text):
    """Why the documented default ``text`` of ``name`` differs from the code's, or None."""
    actual = conf.DEFAULTS[name]
    scalar = actual is None or isinstance(actual, (bool, int, float, str))
    literal = BACKTICKED.match(text)
    if literal is None:
        return "the default must start with a `literal`" if scalar else None
    try:
        documented = ast.literal_eval(literal["literal"])
    except (ValueError, SyntaxError):
        try:
            documented = import_string(literal["literal"])
        except ImportError:
            return None if not scalar else f"{literal['literal']} is not a Python literal"
    if isinstance(actual, (tuple, list)) and isinstance(documented, (tuple, list)):
        actual, documented = tuple(actual), tuple(documented)
    if documented != actual or type(documented) is not type(actual):
        return f"documented {documented!r}, the code has {actual!r}"
    return None


def settings_keys_in_example(tree):
    """Keys an example reads or sets on ``TIKTOK_TRACKING`` (dict displays and subscripts)."""
    keys = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Dict)
            and any(isinstance(t, ast.Name) and t.id == conf.SETTING_NAME for t in node.targets)
        ):
            keys += [k.value for k in node.value.keys if isinstance(k, ast.Constant)]
        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.value, ast.Name)
            and node.value.id == conf.SETTING_NAME
            and isinstance(node.slice, ast.Constant)
        ):
            keys.append(node.slice.value)
    return keys


# --- The docs against the code -----------------------------------------------------------------


def test_every_setting_is_documented_and_every_documented_setting_exists():
    documented = set(documented_settings())
    assert not sorted(set(conf.DEFAULTS) - documented), "settings missing from docs/settings.md"
    assert not sorted(documented - set(conf.DEFAULTS)), "docs/settings.md documents unknown keys"


def test_documented_defaults_match_the_code():
    problems = []
    for name, lines in documented_settings().items():
        text = documented_default(lines)
        problem = "no '- Default:' line" if text is None else default_problem(name, text)
        if problem:
            problems.append(f"{name}: {problem}")
    assert not problems


def test_every_system_check_id_is_documented():
    in_code = check_ids_in_code()
    assert f"{APP_LABEL}.E001" in in_code  # the scan of checks.py found what it looks for
    documented = {f"{APP_LABEL}.{m['id']}" for m in CHECK_ID.finditer(SETTINGS_PAGE.read_text())}
    assert not sorted(in_code - documented), "check ids missing from docs/settings.md"


def test_every_check_id_in_the_docs_exists():
    in_code = check_ids_in_code()
    mentioned = {
        f"{_shown(path)}: {APP_LABEL}.{match['id']}"
        for path in all_pages()
        for match in CHECK_ID.finditer(path.read_text(encoding="utf-8"))
        if f"{APP_LABEL}.{match['id']}" not in in_code
    }
    assert not sorted(mentioned)


def test_every_relative_link_resolves():
    assert not broken_links(all_pages())


def test_every_management_command_is_documented():
    commands = app_commands()
    assert {"tiktok_check", "tiktok_resend", "tiktok_reconcile"} <= set(commands)
    text = "\n".join(path.read_text(encoding="utf-8") for path in doc_pages())
    assert not [name for name in commands if not re.search(rf"\b{name}\b", text)]


def test_command_options_in_the_docs_exist():
    commands = set(app_commands())
    options = {name: command_options(name) for name in commands}
    uses = []
    for path in all_pages():
        page = read_page(path)
        for block in page.blocks:
            if block.language in SHELL_LANGUAGES:
                uses += [(block.where, line) for line in block.text.splitlines()]
        uses += [(f"{_shown(path)}:{number}", code) for number, code in inline_code_spans(page)]
    unknown = []
    for where, text in uses:
        for use in COMMAND_USE.finditer(text):
            command = use["command"]
            if command not in commands:
                continue
            for match in LONG_OPTION.finditer(use["rest"]):
                if match["option"] not in options[command]:
                    unknown.append(f"{where}: {command} {match['option']}")
    assert not unknown


def test_the_docs_have_code_examples():
    assert doc_blocks(PYTHON_LANGUAGES)
    assert doc_blocks(TEMPLATE_LANGUAGES)


@pytest.mark.parametrize("block", doc_blocks(PYTHON_LANGUAGES), ids=lambda block: block.where)
def test_python_example_compiles(block):
    compile(block.text, block.where, "exec")
    unknown = set(settings_keys_in_example(ast.parse(block.text))) - set(conf.DEFAULTS)
    assert not sorted(unknown), f"{block.where} uses keys {conf.SETTING_NAME} does not have"


@pytest.mark.parametrize("block", doc_blocks(TEMPLATE_LANGUAGES), ids=lambda block: block.where)
def test_template_example_compiles(block):
    # Compiling runs the tags' own checks: known tag names and arguments, event names. A
    # fragment may leave out the {% load %} of the page it belongs in; {% extends %} must be first.
    text = block.text
    if "{% extends" not in text:
        text = "{% load tiktok_tracking %}" + text
    engines["django"].from_string(text)


# --- The checks above can fail -----------------------------------------------------------------


def test_reader_finds_indented_fences_and_keeps_prose_apart(tmp_path):
    page_path = tmp_path / "page.md"
    page_path.write_text(
        "# Title\n\nSee [x](other.md).\n\n- item\n\n  ```python\n  x = 1\n  ```\n\n"
        "````md\n```\n[not a link](missing.md)\n```\n````\n",
        encoding="utf-8",
    )
    page = read_page(page_path)
    assert [(b.line, b.language, b.text) for b in page.blocks] == [
        (7, "python", "x = 1\n"),
        (11, "md", "```\n[not a link](missing.md)\n```\n"),
    ]
    assert list(link_targets(page)) == [(3, "other.md")]


def test_reader_rejects_an_unclosed_fence(tmp_path):
    page_path = tmp_path / "page.md"
    page_path.write_text("text\n\n```python\nx = 1\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"page\.md:3: code fence is never closed"):
        read_page(page_path)


def test_broken_links_are_reported(tmp_path):
    (tmp_path / "target.md").write_text("# The `TIMEOUT` setting\n\n## Twice\n\n## Twice\n")
    page_path = tmp_path / "page.md"
    page_path.write_text(
        "[ok](target.md#the-timeout-setting) [ok](target.md#twice-1) [web](https://example.com)\n"
        "[gone](missing.md) ![image](img/none.png)\n"
        "[bad anchor](target.md#nothing) [here](#page)\n"
        "`[in code](missing-too.md)`\n"
        "[ref]: ../../outside.md\n",
        encoding="utf-8",
    )
    assert broken_links([page_path], root=tmp_path) == [
        f"{page_path}:2: missing.md (no such file)",
        f"{page_path}:2: img/none.png (no such file)",
        f"{page_path}:3: target.md#nothing (no heading with the anchor #nothing)",
        f"{page_path}:3: #page (no heading with the anchor #page)",
        f"{page_path}:5: ../../outside.md (points outside the repository)",
    ]


def test_wrong_defaults_are_reported():
    assert default_problem("TIMEOUT", "`10.0`") is None
    assert default_problem("TIMEOUT", "`10`") == "documented 10, the code has 10.0"
    assert default_problem("PIXEL_ID", "none") == "the default must start with a `literal`"
    assert default_problem("CONSENT_LIMITED_DATA_USE_COUNTRIES", '`["US"]`') is None
    assert (
        default_problem("CONSENT_OPT_IN_COUNTRIES", "`tiktok_tracking.conf.EU_EEA_UK_CH`") is None
    )
    assert default_problem("CONSENT_OPT_IN_COUNTRIES", '`("DE",)`') is not None


def test_unknown_setting_keys_in_examples_are_found():
    tree = ast.parse(
        'TIKTOK_TRACKING = {"PIXEL_ID": "x", "PIXEL": "y"}\nTIKTOK_TRACKING["TIMEOUTS"]'
    )
    assert settings_keys_in_example(tree) == ["PIXEL_ID", "PIXEL", "TIMEOUTS"]


def test_unknown_command_options_are_caught():
    assert "--send-test-event" in command_options("tiktok_check")
    assert "--send-test-events" not in command_options("tiktok_check")
