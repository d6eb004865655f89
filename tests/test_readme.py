"""The README's flag table lists every flag of train.py with its real default."""

import os
import re

from conftest import REPO_ROOT
from conftest import run_python


def _flag_defaults(help_text):
  """{flag: default or None} from absl's --helpshort output."""
  defaults = {}
  for block in re.split(r'\n(?=  --)', help_text):
    match = re.match(r'  --(?:\[no\])?(\w+):', block)
    if match:
      default = re.search(r"\(default: '([^']*)'\)", block)
      defaults[match.group(1)] = default.group(1) if default else None
  return defaults


def test_every_train_flag_is_documented_with_its_default():
  with open(os.path.join(REPO_ROOT, 'README.md')) as f:
    readme = f.read()
  rows = dict(re.findall(r'^\| `--(\w+)` \|([^|]*)\|', readme, re.MULTILINE))
  defaults = _flag_defaults(run_python(['train.py', '--helpshort']).stdout)
  assert len(defaults) >= 20
  for flag, default in defaults.items():
    assert flag in rows, 'README has no row for --%s' % flag
    if default is not None:
      documented = rows[flag].strip().strip('`')
      assert documented == default or float(documented) == float(default), flag
