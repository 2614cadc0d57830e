"""SQL is built only with parameters: a static check over ``gateway/``."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.paths import ROOT

_QUERY_METHODS = frozenset(
    {"execute", "executemany", "fetch", "fetchrow", "fetchval", "fetchmany", "prepare", "cursor"}
)


#: Reviewed exceptions: (file, function) -> why the statement cannot take a parameter.
_ALLOWED_BUILT_SQL = {
    ("gateway/db/pool.py", "ensure_database"): (
        "CREATE DATABASE takes an identifier, which cannot be a bind parameter; the name "
        "comes from the operator's DATABASE_URL and is quoted by doubling '\"'"
    ),
}


def _is_built_string(node: ast.expr) -> bool:
    """An f-string, ``%`` formatting, ``.format()``/``.join()``, or ``+`` with a non-literal."""
    if isinstance(node, ast.JoinedStr):
        return any(isinstance(part, ast.FormattedValue) for part in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return not (isinstance(node.left, ast.Constant) and isinstance(node.right, ast.Constant))
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("format", "join")
    )


def built_sql_calls(directory: Path, base: Path = ROOT) -> list[tuple[str, str, int, str]]:
    """``(file, function, line, source)`` of every query call whose SQL is built."""
    found = []
    for path in sorted(directory.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        relative = path.relative_to(base).as_posix()
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            # A name assigned a built string in the function counts as built too.
            built_names = {
                target.id
                for node in ast.walk(function)
                if isinstance(node, ast.Assign) and _is_built_string(node.value)
                for target in node.targets
                if isinstance(target, ast.Name)
            }
            for node in ast.walk(function):
                if not (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in _QUERY_METHODS
                    and node.args
                ):
                    continue
                first = node.args[0]
                if _is_built_string(first) or (
                    isinstance(first, ast.Name) and first.id in built_names
                ):
                    found.append((relative, function.name, node.lineno, ast.unparse(first)))
    return found


def test_the_static_check_finds_built_sql(tmp_path: Path):
    """The checker itself catches each way of building a statement, and only those."""
    (tmp_path / "sample.py").write_text(
        "async def f(conn, name):\n"
        "    await conn.execute(f'DELETE FROM t WHERE name = {name}')\n"
        "    await conn.fetch('SELECT * FROM t WHERE id = %s' % name)\n"
        "    await conn.fetchrow('SELECT * FROM t WHERE id = {}'.format(name))\n"
        "    await conn.fetchval('SELECT ' + name)\n"
        "    query = f'SELECT {name}'\n"
        "    await conn.fetch(query)\n"
        "    await conn.fetch('SELECT * FROM t WHERE id = $1', name)\n"
        "    await conn.execute('SELECT 1 ' 'FROM t')\n"
        "    await pipe.execute()\n"
    )
    found = built_sql_calls(tmp_path, tmp_path)
    assert [line for _, _, line, _ in found] == [2, 3, 4, 5, 7]


def test_sql_is_built_only_with_parameters():
    found = built_sql_calls(ROOT / "gateway")
    unexpected = [call for call in found if (call[0], call[1]) not in _ALLOWED_BUILT_SQL]
    assert not unexpected, "SQL built from strings instead of parameters:\n" + "\n".join(
        f"{file}:{line} in {function}(): {source}" for file, function, line, source in unexpected
    )
