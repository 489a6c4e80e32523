"""The tools and the package import the ordinary way: no Python file under tools/ or ravlt_dense/
edits ``sys.path``, hands a child process a PYTHONPATH or loads a module from a file path, and
no measurement tool (tools/analysis/) imports a script beside it."""
import ast
from pathlib import Path
from typing import List, Tuple

from conftest import REPO

PATH_EDITS = {'insert', 'append', 'extend', 'remove', 'pop', 'clear'}
FILE_LOADERS = {'spec_from_file_location', 'SourceFileLoader', 'addsitedir', 'run_path'}


def _is_sys_path(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == 'path'
            and isinstance(node.value, ast.Name) and node.value.id == 'sys')


def path_tricks(source: str) -> List[Tuple[int, str]]:
    """(line, what) of each way ``source`` changes where imports come from."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in PATH_EDITS and _is_sys_path(
                node.value):
            found.append((node.lineno, f'sys.path.{node.attr}'))
        elif isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if _is_sys_path(t) or (isinstance(t, ast.Subscript) and _is_sys_path(t.value)):
                    found.append((node.lineno, 'sys.path assigned'))
        elif (isinstance(node, ast.Constant) and node.value == 'PYTHONPATH') or (
                isinstance(node, ast.keyword) and node.arg == 'PYTHONPATH'):
            found.append((node.lineno, 'PYTHONPATH'))
        elif isinstance(node, (ast.Attribute, ast.Name)) and getattr(
                node, 'attr', getattr(node, 'id', None)) in FILE_LOADERS:
            found.append((node.lineno, getattr(node, 'attr', getattr(node, 'id', None))))
    return found


def sibling_imports(path: Path) -> List[str]:
    """The modules ``path`` imports by a name of a script in its own folder."""
    siblings = {p.stem for p in path.parent.glob('*.py')} - {path.stem}
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names if a.name.split('.')[0] in siblings]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
                node.module.split('.')[0] in siblings:
            names.append(node.module)
    return names


def test_the_detectors_find_what_they_look_for(tmp_path):
    assert path_tricks('import sys\nsys.path.insert(0, "x")\n') == [(2, 'sys.path.insert')]
    assert path_tricks('import sys\nsys.path[:0] = ["x"]\n') == [(2, 'sys.path assigned')]
    assert sorted(path_tricks('env = dict(PYTHONPATH="x")\nenv["PYTHONPATH"] = "y"\n')) == [
        (1, 'PYTHONPATH'), (2, 'PYTHONPATH')]
    assert path_tricks('import importlib.util as u\nu.spec_from_file_location("m", "m.py")\n') == [
        (2, 'spec_from_file_location')]
    assert path_tricks('# sys.path.insert(0, "x")\nimport sys\nprint(sys.path)\n') == []
    (tmp_path / 'helper.py').write_text('')
    (tmp_path / 'tool.py').write_text('import os\nimport helper\nfrom helper import x\n')
    assert sibling_imports(tmp_path / 'tool.py') == ['helper', 'helper']


def test_no_tool_or_module_changes_where_imports_come_from():
    files = sorted(p for top in ('tools', 'ravlt_dense') for p in (REPO / top).rglob('*.py'))
    assert len(files) > 50  # the tree was found
    found = {str(p.relative_to(REPO)): tricks for p in files
             if (tricks := path_tricks(p.read_text()))}
    assert found == {}


def test_measurement_tools_import_no_script_beside_them():
    scripts = sorted((REPO / 'tools' / 'analysis').glob('*.py'))
    assert any(p.name == 'benchmark.py' for p in scripts)
    found = {p.name: names for p in scripts if (names := sibling_imports(p))}
    assert found == {}
