"""docs/configuration.md holds the one table of environment variables; these tests keep it true.

The shipped code's reads are found by parsing it (`ast`), not by importing it: `env.<type>("NAME")`
and `env("NAME")` (django-environ), settings' own helpers that pass their argument on to `env`
(`_required("SECRET_KEY", ...)`), and `os.environ.get(...)` / `os.environ[...]` / `os.getenv(...)`,
where the name may be a module constant (`ENV = "PORTAL_TEST_KILL_AT"`, also imported from another
module). The table's "Read by" column says which file reads each variable.
"""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "configuration.md"
SETTINGS = "portal/settings.py"
# The code that ships: the project package, the domain app and gunicorn's configuration. The
# stand-in Requesty, tests and bench scripts are not configured by operators.
SHIPPED = [ROOT / "gunicorn.conf.py", ROOT / "manage.py", *sorted((ROOT / "portal").rglob("*.py"))]
SHIPPED += sorted((ROOT / "keys").rglob("*.py"))


def table() -> dict[str, set[str]]:
    """Variable -> the files its "Read by" cell names, from the table whose header starts `| Variable |`."""
    rows: dict[str, set[str]] = {}
    header: list[str] | None = None
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else None
        if cells is None:
            if header is not None and rows:
                break  # the end of the table
            continue
        if header is None:
            if cells[0] == "Variable":
                header = cells
            continue
        if set(cells[0]) <= set("-: "):
            continue  # the |---| line
        read_by = set(re.findall(r"`([^`]+)`", cells[header.index("Read by")]))
        for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", cells[0]):
            assert name not in rows, f"{name} is listed twice in {DOC.name}"
            rows[name] = read_by
    assert header is not None and rows, f"no `| Variable | ... | Read by | ... |` table in {DOC}"
    return rows


def _module_constants(path: Path) -> dict[str, str]:
    """Top-level NAME = "string" assignments, and names imported from such modules in the repo."""
    tree = ast.parse(path.read_text())
    constants = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            constants.update({t.id: node.value.value for t in node.targets if isinstance(t, ast.Name)})
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.level:  # relative: from .faultpoints import ENV
                base = path.parent
                for _ in range(node.level - 1):
                    base = base.parent
                source = base.joinpath(*node.module.split(".")).with_suffix(".py")
            else:
                source = ROOT.joinpath(*node.module.split(".")).with_suffix(".py")
            if source.is_file() and source != path:
                theirs = _module_constants(source)
                constants.update({a.asname or a.name: theirs[a.name] for a in node.names if a.name in theirs})
    return constants


def _is_env(func: ast.expr) -> bool:
    """`env(...)` or `env.bool(...)`, `env.db(...)`, ...: django-environ's reader."""
    return (isinstance(func, ast.Name) and func.id == "env") or (
        isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "env"
    )


def _is_os_environ(node: ast.expr) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ" and getattr(node.value, "id", None) == "os"


def _is_os_read(func: ast.expr) -> bool:
    """`os.environ.get(...)` or `os.getenv(...)`."""
    if not isinstance(func, ast.Attribute):
        return False
    return (func.attr == "get" and _is_os_environ(func.value)) or (
        func.attr == "getenv" and getattr(func.value, "id", None) == "os"
    )


def reads(path: Path) -> set[str]:
    """The environment variables a module reads, by name."""
    tree = ast.parse(path.read_text())
    constants = _module_constants(path)

    def name_of(arg: ast.expr) -> str | None:
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            return arg.value
        if isinstance(arg, ast.Name):
            return constants.get(arg.id)
        return None

    # Helpers such as settings' _required(name, default): functions that hand a parameter to env.
    helpers = set()
    for fn in (n for n in tree.body if isinstance(n, ast.FunctionDef)):
        params = {a.arg for a in fn.args.args}
        for call in (n for n in ast.walk(fn) if isinstance(n, ast.Call)):
            if _is_env(call.func) and call.args and getattr(call.args[0], "id", None) in params:
                helpers.add(fn.name)

    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            if _is_env(func) or _is_os_read(func) or (isinstance(func, ast.Name) and func.id in helpers):
                found.add(name_of(node.args[0]))
        elif isinstance(node, ast.Subscript) and _is_os_environ(node.value) and isinstance(node.ctx, ast.Load):
            found.add(name_of(node.slice))
    return found - {None}


def test_every_variable_settings_reads_is_in_the_table():
    read = reads(ROOT / SETTINGS)
    assert {"SECRET_KEY", "DATABASE_URL", "DEBUG", "OIDC_CLIENT_ID"} <= read  # the parser sees them
    missing = sorted(read - table().keys())
    assert not missing, f"{SETTINGS} reads {missing}, which docs/configuration.md's table does not list"


def test_the_table_lists_only_what_its_read_by_files_read():
    for name, files in table().items():
        assert files, f"{name}: the 'Read by' cell names no file"
        for file in sorted(files):
            assert (ROOT / file).is_file(), f"{name}: 'Read by' names {file}, which does not exist"
            assert name in reads(ROOT / file), f"docs/configuration.md says {file} reads {name}; it does not"


def test_every_variable_the_shipped_code_reads_is_in_the_table_with_its_reader():
    rows = table()
    for path in SHIPPED:
        file = path.relative_to(ROOT).as_posix()
        for name in sorted(reads(path)):
            assert name in rows, f"{file} reads {name}, which docs/configuration.md's table does not list"
            assert file in rows[name], f"{file} reads {name}; add it to the row's 'Read by' cell"


def test_env_example_offers_what_operators_set():
    """.env.example names every variable settings.py or gunicorn.conf.py reads (set or commented
    out), and nothing the table does not list."""
    example = (ROOT / ".env.example").read_text()
    offered = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", example, flags=re.MULTILINE))
    rows = table()
    operators = {n for n, files in rows.items() if files & {SETTINGS, "gunicorn.conf.py"}}
    assert not sorted(operators - offered), f".env.example lacks {sorted(operators - offered)}"
    assert not sorted(offered - rows.keys()), f".env.example sets {sorted(offered - rows.keys())}, not in the table"
