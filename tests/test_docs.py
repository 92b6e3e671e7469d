"""The docs stay true to the code: settings, check ids, links, commands and code examples."""

import ast
import builtins
import importlib
import inspect
import os
import re
import symtable
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.apps import AppConfig
from django.core.management import get_commands, load_command_class
from django.template import engines
from django.utils.module_loading import import_string

from tiktok_tracking import checks, conf
from tiktok_tracking.adapters import OrderAdapter
from tiktok_tracking.receivers import on_order_refunded, on_payment_completed

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = None

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
SETTINGS_PAGE = DOCS / "settings.md"
INTEGRATION_PAGE = DOCS / "integration.md"
OSCAR_PAGE = DOCS / "integrations" / "oscar.md"
CHECKS_MODULE = ROOT / "tiktok_tracking" / "checks.py"
PACKAGE_DIR = ROOT / "tiktok_tracking"
REQUIREMENTS = ROOT / "requirements.txt"
PYPROJECT = ROOT / "pyproject.toml"
APP_LABEL = "tiktok_tracking"
# The changelog tells history, files since removed included; this file's own tests name made-up
# pages on purpose.
NOT_SCANNED_FOR_PAGES = {ROOT / "CHANGELOG.md", Path(__file__).resolve()}
# Settings whose value is a dotted path, and what it must name.
PATH_SETTINGS = {
    "ORDER_ADAPTER": "adapter",
    "PAID_ORDERS": "callable",
    "COUNTRY_RESOLVER": "callable",
}
# A code block that is a file of the shop's names it on its first line: "# shop/tracking.py".
FILE_HEADER = re.compile(r"^#\s*(?P<path>[\w/]+)\.py\s*$")

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
CHECK_ID = re.compile(rf"\b{APP_LABEL}\.(?P<id>(?:[a-z_]+\.)?[EWCI]\d{{3}})\b")
FULL_CHECK_ID = re.compile(rf"{APP_LABEL}\.(?:[a-z_]+\.)?[EWCI]\d{{3}}")
TABLE_CHECK_ID = re.compile(rf"^\|\s*`(?P<id>{FULL_CHECK_ID.pattern})`\s*\|")
PAGE_NAME = re.compile(r"(?<![\w./-])(?P<name>[\w./-]*[\w-]\.md)\b")
PINNED = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==(?P<version>[\w.]+)\s*$")
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
    """Every check id the app can report: the short ones checks.py writes (``"E001"``) and the
    full ones anywhere in the package (``"tiktok_tracking.oscar.W001"``)."""
    found = set()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
                continue
            if path == CHECKS_MODULE and CHECK_ID_LITERAL.fullmatch(node.value):
                found.add(f"{APP_LABEL}.{node.value}")
            elif FULL_CHECK_ID.fullmatch(node.value):
                found.add(node.value)
    return found


def check_table_ids(path=SETTINGS_PAGE):
    """The ids of the rows of the page's system checks table."""
    return {
        match["id"] for _n, line in read_page(path).prose if (match := TABLE_CHECK_ID.match(line))
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


# --- Pages named, dotted paths, signal arguments, versions --------------------------------------


def page_mentions(path):
    """``(line number, name)`` of every ``*.md`` file the text of ``path`` names."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        for match in PAGE_NAME.finditer(line):
            yield number, match["name"]


def missing_pages(paths, root=ROOT):
    """``path:line: name`` for every named ``*.md`` found neither beside ``path`` nor from the
    repository's root or docs/."""
    missing = []
    for path in paths:
        for number, name in page_mentions(path):
            places = (path.parent / name, root / name, root / "docs" / name)
            if not any(place.is_file() for place in places):
                missing.append(f"{_shown(path)}:{number}: {name}")
    return missing


def files_naming_pages():
    pages = [*ROOT.glob("*.md"), *DOCS.rglob("*.md")]
    sources = [
        path
        for folder in ("tiktok_tracking", "tests", "bench", "demo_shop")
        for path in (ROOT / folder).rglob("*.py")
    ]
    return sorted(set(pages + sources) - NOT_SCANNED_FOR_PAGES)


def shop_modules(blocks):
    """``{"shop.tracking": {name: node}}``: the classes and functions each example file of the
    shop defines (not those it imports), from blocks headed ``# shop/tracking.py``."""
    modules = {}
    for block in blocks:
        header = FILE_HEADER.match(block.text.split("\n", 1)[0])
        if not header:
            continue
        module = header["path"].replace("/", ".")
        defined = modules.setdefault(module, {})
        for node in ast.parse(block.text).body:
            if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
                defined[node.name] = node
    return modules


def dotted_paths_in_example(tree):
    """``(what, path)`` of the dotted paths a settings example names: ``TIKTOK_TRACKING``'s path
    settings, and the app's entries in ``INSTALLED_APPS`` and ``MIDDLEWARE``."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Assign):
            continue
        for target in node.targets:
            name = target.id if isinstance(target, ast.Name) else None
            if name == conf.SETTING_NAME and isinstance(node.value, ast.Dict):
                found += [
                    (PATH_SETTINGS[key.value], value.value)
                    for key, value in zip(node.value.keys, node.value.values, strict=True)
                    if isinstance(key, ast.Constant)
                    and key.value in PATH_SETTINGS
                    and isinstance(value, ast.Constant)
                    and isinstance(value.value, str)
                ]
            if (
                isinstance(target, ast.Subscript)
                and isinstance(target.value, ast.Name)
                and target.value.id == conf.SETTING_NAME
                and isinstance(target.slice, ast.Constant)
                and target.slice.value in PATH_SETTINGS
                and isinstance(node.value, ast.Constant)
            ):
                found.append((PATH_SETTINGS[target.slice.value], node.value.value))
            if name in ("INSTALLED_APPS", "MIDDLEWARE") and isinstance(node.value, ast.List):
                found += [
                    ("app" if name == "INSTALLED_APPS" else "middleware", item.value)
                    for item in node.value.elts
                    if isinstance(item, ast.Constant) and isinstance(item.value, str)
                ]
    return found


def _importable_module(path):
    module = path.rpartition(".")[0]
    try:
        import_string(path) if module else None
    except ImportError:
        return False
    return True


def path_problem(what, path, modules):
    """Why the dotted ``path``, named where a ``what`` belongs, is not one, or None.

    The app's own paths are imported; a path into the shop's example files (``modules``, from
    :func:`shop_modules`) must name something those files define, not import.
    """
    module, _, name = path.rpartition(".")
    if module in modules:
        node = modules[module].get(name)
        if node is None:
            return f"{path}: the example {module.replace('.', '/')}.py defines no {name}"
        if what in ("adapter", "app") and not isinstance(node, ast.ClassDef):
            return f"{path}: {name} is not a class"
        if what == "callable" and not isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            return f"{path}: {name} is not a function"
        return None
    if what == "app":
        if not path.startswith(APP_LABEL):
            return None  # another package's app: its own docs speak for it
        try:
            config = AppConfig.create(path)
        except Exception as exc:
            return f"{path}: {exc}"
        # A plain module gets a config labelled after its last name, which may be another app's.
        if not config.label.startswith(APP_LABEL):
            return f"{path}: Django would label it {config.label!r}, not an app of its own"
        return None
    if what == "middleware" and not path.startswith(APP_LABEL):
        return None
    try:
        target = import_string(path)
    except ImportError:
        return f"{path}: cannot be imported, and no example file of the docs defines it"
    if what == "adapter":
        if not (isinstance(target, type) and issubclass(target, OrderAdapter)):
            return f"{path}: not an OrderAdapter subclass"
        if target is OrderAdapter and path != "tiktok_tracking.adapters.OrderAdapter":
            return f"{path}: the base class itself, imported there"
    if what == "callable" and not callable(target):
        return f"{path}: not callable"
    return None


def example_path_problems(blocks):
    modules = shop_modules(blocks)
    problems = []
    for block in blocks:
        for what, path in dotted_paths_in_example(ast.parse(block.text)):
            problem = path_problem(what, path, modules)
            if problem:
                problems.append(f"{block.where}: {problem}")
    return problems


def section(path, heading):
    """The lines of ``path`` under ``heading`` (a whole heading line), code blocks included, to
    the next heading of the same or a higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    lines, inside, fenced = [], False, False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
        heading_here = not fenced and HEADING.match(line)
        if heading_here and inside and len(line) - len(line.lstrip("#")) <= level:
            break
        if line == heading:
            inside = True
        elif inside:
            lines.append(line)
    assert inside, f"{_shown(path)} has no heading {heading!r}"
    return lines


def receiver_arguments(receiver):
    """The keyword arguments a signal receiver reads (``sender`` and ``**kwargs`` aside)."""
    return [
        name
        for name, parameter in inspect.signature(receiver).parameters.items()
        if name != "sender" and parameter.kind is not inspect.Parameter.VAR_KEYWORD
    ]


def pinned_versions():
    pins = {}
    for line in REQUIREMENTS.read_text(encoding="utf-8").splitlines():
        match = PINNED.match(line.strip())
        if match:
            pins[match["name"].lower()] = match["version"]
    return pins


def release_tuple(version):
    return tuple(int(part) for part in re.findall(r"\d+", version))


def extra_lower_bound_problem(requirement, tested):
    """Why ``requirement`` (``"django-payments>=3.1"``) promises more than the suite tests, or
    None: its lower bound must be, to the minor version, the oldest of the ``tested`` versions
    (requirements.txt's pin and the support matrix's cells), and the newest must satisfy it."""
    match = re.fullmatch(r"\s*[A-Za-z0-9_.-]+\s*>=\s*(?P<low>[\w.]+)(?:\s*,.*)?", requirement)
    if match is None:
        return f"{requirement}: no lower bound"
    low = release_tuple(match["low"])
    oldest, newest = min(tested, key=release_tuple), max(tested, key=release_tuple)
    if low > release_tuple(newest):
        return f"{requirement}: above the tested {newest}"
    if low[:2] < release_tuple(oldest)[:2]:
        return f"{requirement}: allows releases before {oldest}, which nothing tests"
    if low[:2] > release_tuple(oldest)[:2]:
        return f"{requirement}: the tested {oldest} is below it"
    return None


def matrix_versions(name):
    """The versions of ``name`` the support matrix's cells pin (noxfile.py)."""
    text = (ROOT / "noxfile.py").read_text(encoding="utf-8")
    return re.findall(rf'"{re.escape(name)}(?:\[[^\]]*\])?==(?P<version>[\w.]+)"', text)


# --- Examples that run on their own -------------------------------------------------------------

ENVIRONMENT_NAME = re.compile(r"[A-Z][A-Z0-9]*_[A-Z0-9_]+")
# A module that creates a Celery app makes it the process's current app: the examples of a
# project's celery.py are left to the packaging test's fresh project, which runs them for real.
SIDE_EFFECT_IMPORTS = frozenset({"celery"})


def _imported_modules(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield "." * node.level + (node.module or "")


def _importable(module):
    if module.startswith("."):
        return False
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def undefined_names(text):
    """Names the block's top level reads but neither defines, imports nor has as a builtin: a
    fragment's (``order``, ``env``), which only the page around it gives meaning to."""
    table = symtable.symtable(text, "<example>", "exec")
    return sorted(
        symbol.get_name()
        for symbol in table.get_symbols()
        if symbol.is_referenced()
        and not (symbol.is_assigned() or symbol.is_imported())
        and not hasattr(builtins, symbol.get_name())
    )


def runs_on_its_own(block):
    """Whether ``block`` is a whole program: every import resolves, every name is defined."""
    tree = ast.parse(block.text)
    modules = list(_imported_modules(tree))
    if any(module.split(".")[0] in SIDE_EFFECT_IMPORTS for module in modules):
        return False
    return all(_importable(module) for module in modules) and not undefined_names(block.text)


def environment_names(block):
    """The environment variables an example may read, by their look (``TIKTOK_PIXEL_ID``)."""
    return sorted(
        {
            node.value
            for node in ast.walk(ast.parse(block.text))
            if isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and ENVIRONMENT_NAME.fullmatch(node.value)
        }
    )


def runnable_blocks():
    return [block for block in doc_blocks(PYTHON_LANGUAGES) if runs_on_its_own(block)]


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


def test_every_system_check_id_has_a_row_in_the_checks_table_and_every_row_exists():
    in_code = check_ids_in_code()
    # The scan found what it looks for: checks.py's short ids and the integrations' full ones.
    assert {f"{APP_LABEL}.E001", f"{APP_LABEL}.oscar.W002", f"{APP_LABEL}.payments.E001"} <= in_code
    table = check_table_ids()
    assert not sorted(in_code - table), "check ids missing from docs/settings.md's table"
    assert not sorted(table - in_code), "docs/settings.md's table lists ids the code lacks"


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


def test_every_page_the_docs_and_code_name_exists():
    assert not missing_pages(files_naming_pages())


def test_every_dotted_path_in_a_settings_example_names_what_the_setting_needs():
    assert not example_path_problems(doc_blocks(PYTHON_LANGUAGES))


def test_every_payment_completed_argument_has_a_row_in_the_signal_table():
    rows = {
        match[1]
        for line in section(INTEGRATION_PAGE, "## Payment completed: the signal")
        if (match := re.match(r"^\| `(\w+)` \|", line))
    }
    arguments = receiver_arguments(on_payment_completed)
    assert {"order", "request", "charge"} <= set(arguments)
    assert not sorted(set(arguments) - rows)


def test_every_order_refunded_argument_is_documented():
    text = "\n".join(section(INTEGRATION_PAGE, "## Refunds and cancellations"))
    arguments = receiver_arguments(on_order_refunded)
    assert {"order", "amount", "refund_id"} <= set(arguments)
    # Named in prose (`refund_id`, `amount=None`) or passed in the example (order=order).
    assert not [name for name in arguments if not re.search(rf"`{name}[`=]|\b{name}=", text)]


def test_the_oscar_page_names_the_versions_the_suite_tests():
    pins = pinned_versions()
    django_release = ".".join(pins["django"].split(".")[:2])
    text = " ".join(" ".join(section(OSCAR_PAGE, "## Supported versions")).split())
    assert f"django-oscar {pins['django-oscar']}" in text
    # The pinned Django, and each the matrix's oscar cells run the oscar shop on.
    noxfile = (ROOT / "noxfile.py").read_text(encoding="utf-8")
    oscar_cells = re.search(r"OSCAR_CHANGES = \{(.*?)\n\}", noxfile, re.DOTALL)
    assert oscar_cells, "noxfile.py has no OSCAR_CHANGES"
    releases = {django_release, *re.findall(r'^    "(\d+\.\d+)":', oscar_cells[1], re.MULTILINE)}
    assert len(releases) >= 3, releases
    assert not [release for release in releases if f"Django {release}" not in text], text


def test_integration_extras_ask_for_releases_the_suite_tests():
    if tomllib is None:
        pytest.skip("tomllib is Python 3.11+")
    extras = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    pins = pinned_versions()
    problems = []
    for extra in ("payments", "oscar"):
        for requirement in extras[extra]:
            name = re.split(r"[\s<>=!~\[]", requirement, maxsplit=1)[0].lower()
            tested = [pins[name], *matrix_versions(name)]
            problem = extra_lower_bound_problem(requirement, tested)
            if problem:
                problems.append(f"[{extra}] {problem}")
    assert not problems


def test_examples_that_run_on_their_own_are_found():
    found = {block.where for block in runnable_blocks()}
    # The README's settings, the upsell charges, the adapter subclasses: whole programs.
    assert any(where.startswith("README.md:") for where in found)
    assert any(where.startswith("docs/subscriptions.md:") for where in found)
    assert len(found) >= 10


@pytest.mark.django_db
@pytest.mark.parametrize("block", runnable_blocks(), ids=lambda block: block.where)
def test_python_example_runs(block, monkeypatch, settings):
    for name in environment_names(block):
        if name not in os.environ:
            monkeypatch.setenv(name, f"example-{name.lower()}")
    namespace = {"__name__": "docs_example"}
    exec(compile(block.text, block.where, "exec"), namespace)  # noqa: S102 - the docs' own code
    tracking = namespace.get(conf.SETTING_NAME)
    if not isinstance(tracking, dict):
        return
    # The settings it shows pass the app's checks, on top of the test project's. A path into
    # the docs' example files of the shop cannot be imported here: it keeps the project's, and
    # test_every_dotted_path_in_a_settings_example_names_what_the_setting_needs checks it.
    shop = tuple(f"{module}." for module in shop_modules(doc_blocks(PYTHON_LANGUAGES)))
    shown = {
        key: value
        for key, value in tracking.items()
        if not (key in PATH_SETTINGS and isinstance(value, str) and value.startswith(shop))
    }
    base = dict(settings.TIKTOK_TRACKING)
    if "PIXELS" in shown:  # it replaces the single pixel's keys
        for key in ("PIXEL_ID", "ACCESS_TOKEN", "TEST_EVENT_CODE"):
            base.pop(key, None)
    settings.TIKTOK_TRACKING = {**base, **shown}
    errors = [
        f"{error.id}: {error.msg}"
        for error in checks.check_settings() + checks.check_consent_settings()
        if error.is_serious()
    ]
    assert not errors


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


def test_missing_pages_are_reported(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "settings.md").write_text("x")
    (tmp_path / "README.md").write_text("x")
    source = tmp_path / "module.py"
    source.write_text("# See README.md and docs/settings.md.\n# TIKTOK.md, item 10.\n")
    page = tmp_path / "docs" / "page.md"
    page.write_text("[s](settings.md), ../README.md, [n](gone.md)\n")
    assert missing_pages([source, page], root=tmp_path) == [
        f"{source}:2: TIKTOK.md",
        f"{page}:1: gone.md",
    ]


def test_a_settings_path_to_the_imported_base_class_is_reported():
    # The README's old example: the module defines ShopOrderAdapter, the setting names the
    # OrderAdapter it only imports.
    adapter = CodeBlock(
        README,
        1,
        "python",
        "# shop/tracking.py\nfrom tiktok_tracking.adapters import OrderAdapter\n\n\n"
        "class ShopOrderAdapter(OrderAdapter):\n    pass\n\n\ndef paid_orders(since, until):\n"
        "    return []\n",
    )
    settings_block = CodeBlock(
        README,
        20,
        "python",
        'TIKTOK_TRACKING = {"ORDER_ADAPTER": "shop.tracking.OrderAdapter"}\n'
        'TIKTOK_TRACKING["PAID_ORDERS"] = "shop.tracking.paid_orders"\n'
        'INSTALLED_APPS = [..., "tiktok_tracking.integrations.oscar"]\n'
        'MIDDLEWARE = ["tiktok_tracking.middleware.NoSuchMiddleware"]\n',
    )
    assert example_path_problems([adapter, settings_block]) == [
        "README.md:20: shop.tracking.OrderAdapter: the example shop/tracking.py defines no "
        "OrderAdapter",
        "README.md:20: tiktok_tracking.integrations.oscar: Django would label it 'oscar', not an "
        "app of its own",
        "README.md:20: tiktok_tracking.middleware.NoSuchMiddleware: cannot be imported, and no "
        "example file of the docs defines it",
    ]
    fixed = CodeBlock(
        README,
        20,
        "python",
        'TIKTOK_TRACKING = {"ORDER_ADAPTER": "shop.tracking.ShopOrderAdapter"}\n'
        'INSTALLED_APPS = [..., "tiktok_tracking.integrations.oscar.TikTokOscarConfig"]\n',
    )
    assert example_path_problems([adapter, fixed]) == []
    assert path_problem("adapter", "tests.shop.adapters.OrderAdapter", {}) == (
        "tests.shop.adapters.OrderAdapter: the base class itself, imported there"
    )


def test_an_undocumented_receiver_argument_is_found():
    def receiver(sender, order, request=None, charge=None, **kwargs):
        pass

    assert receiver_arguments(receiver) == ["order", "request", "charge"]


def test_extras_below_the_tested_release_are_reported():
    assert extra_lower_bound_problem("django-payments>=3.1", ["4.1.0", "3.1.0"]) is None
    assert extra_lower_bound_problem("django-oscar>=4.2", ["4.2.1"]) is None
    assert extra_lower_bound_problem("django-payments>=2.1", ["4.1.0", "3.1.0"]) == (
        "django-payments>=2.1: allows releases before 3.1.0, which nothing tests"
    )
    assert extra_lower_bound_problem("django-payments>=4.1", ["4.1.0", "3.1.0"]) == (
        "django-payments>=4.1: the tested 3.1.0 is below it"
    )
    assert extra_lower_bound_problem("django-payments>=4.2", ["4.1.0"]) == (
        "django-payments>=4.2: above the tested 4.1.0"
    )
    assert extra_lower_bound_problem("django-payments", ["4.1.0"]) is not None
    assert matrix_versions("django-payments") == ["3.1.0"]


def test_check_table_rows_are_read(tmp_path):
    page = tmp_path / "settings.md"
    page.write_text(
        "| id | level |\n|---|---|\n| `tiktok_tracking.E001` | error |\n"
        "| `tiktok_tracking.oscar.W002` | warning |\n`tiktok_tracking.E099` in prose\n"
    )
    assert check_table_ids(page) == {"tiktok_tracking.E001", "tiktok_tracking.oscar.W002"}


def test_the_testing_page_shows_the_example_test_ci_runs():
    example = (ROOT / "tests" / "test_shop_example.py").read_text(encoding="utf-8")
    blocks = [block.text for block in read_page(DOCS / "testing.md").blocks]
    assert example in blocks, "docs/testing.md must show tests/test_shop_example.py verbatim"
