"""Prints the repository files an entry script needs, one per line, relative
to the repository root: the script and every module of this project it
imports, transitively (with their packages' __init__.py). Computed from the
import statements, so an archive built from it cannot miss a module.

Usage: python scripts/cluster/code_files.py train.py
"""

import ast
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _module_file(name):
  """The repository file of module `name`, or None if it is not ours."""
  base = os.path.join(REPO_ROOT, *name.split('.'))
  for path in (base + '.py', os.path.join(base, '__init__.py')):
    if os.path.isfile(path):
      return path
  return None


def _imported_modules(path):
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield alias.name
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      yield node.module
      for alias in node.names:  # `from package import module`
        yield '%s.%s' % (node.module, alias.name)


def code_files(entry_script):
  """Repository-relative paths of entry_script and all it imports of ours."""
  found, pending = set(), [os.path.join(REPO_ROOT, entry_script)]
  while pending:
    path = pending.pop()
    if path in found:
      continue
    found.add(path)
    for name in _imported_modules(path):
      parts = name.split('.')
      for depth in range(1, len(parts) + 1):  # The packages on the way.
        module_path = _module_file('.'.join(parts[:depth]))
        if module_path and module_path not in found:
          pending.append(module_path)
  return sorted(os.path.relpath(path, REPO_ROOT) for path in found)


if __name__ == '__main__':
  print('\n'.join(code_files(sys.argv[1])))
