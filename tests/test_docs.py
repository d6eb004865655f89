"""The front page and docs/: short, linked, every link leading somewhere,
every flag of train.py documented with its default, and every command shown
on every page run, made small (tests/doc_commands.py)."""

import os
import re
import subprocess

import pytest

import doc_commands
from helpers import REPO_ROOT
from helpers import run_python

_LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)\)|<img src="([^"]+)"')


def _read(page):
  with open(os.path.join(REPO_ROOT, page)) as f:
    return f.read()


def _anchors(text):
  """GitHub's heading anchors: lower case, punctuation dropped, spaces -> '-'."""
  anchors = set()
  for heading in re.findall(r'^#+ (.+)$', text, re.MULTILINE):
    slug = re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')
    anchors.add(slug)
  return anchors


def _prose(text):
  """The text outside fenced blocks (a '#' in a shell block is no heading)."""
  return re.sub(r'^```.*?^```', '', text, flags=re.MULTILINE | re.DOTALL)


@pytest.mark.parametrize('page', doc_commands.DOC_PAGES + ['CHANGELOG.md'])
def test_every_link_leads_somewhere(page):
  text = _read(page)
  links = [a or b for a, b in _LINK.findall(_prose(text))]
  if page.startswith('docs/'):
    assert '../README.md' in links, '%s does not link back to the README' % page
  for link in links:
    if re.match(r'(https?|mailto):', link):
      continue
    path, _, anchor = link.partition('#')
    target = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
    assert os.path.exists(os.path.join(REPO_ROOT,
                                       target)), ('%s links to %s, which does not exist' %
                                                  (page, link))
    if anchor:
      assert target.endswith('.md'), '%s: anchor on a non-page %s' % (page, link)
      assert anchor in _anchors(_prose(_read(target))), ('%s links to %s, but %s has no heading #%s'
                                                         % (page, link, target, anchor))


def test_the_front_page_is_short_and_reaches_every_page_in_one_click():
  readme = _read('README.md')
  assert len(readme.split('\n')) <= 250
  linked = {os.path.normpath(a or b) for a, b in _LINK.findall(readme)}
  for page in doc_commands.DOC_PAGES[1:]:
    assert page in linked, 'README.md does not link %s' % page
  for name in ('LICENSE', 'CHANGELOG.md'):
    assert name in linked, name


@pytest.mark.parametrize('page', doc_commands.DOC_PAGES[1:])
def test_each_page_starts_with_what_the_reader_will_be_able_to_do(page):
  lines = _read(page).split('\n')
  assert lines[0].startswith('# '), page
  assert lines[2].startswith('After this page you '), page


def test_changelog_names_the_version_the_package_has():
  from mnist_vae import __version__
  versions = re.findall(r'^## (\d+\.\d+\.\d+)', _read('CHANGELOG.md'), re.MULTILINE)
  assert versions and versions[0] == __version__, (versions, __version__)
  assert re.search(r'\(this is\s+%s\)' % re.escape(__version__), _read('README.md'))
  assert 'Apache License' in _read('LICENSE') and 'Version 2.0' in _read('LICENSE')


def _flag_defaults(help_text):
  """{flag: default or None} from absl's --helpshort output."""
  defaults = {}
  for block in re.split(r'\n(?=  --)', help_text):
    match = re.match(r'  --(?:\[no\])?(\w+):', block)
    if match:
      default = re.search(r"\(default: '([^']*)'\)", block)
      defaults[match.group(1)] = default.group(1) if default else None
  return defaults


@pytest.mark.large
def test_every_train_flag_is_documented_with_its_default():
  rows = dict(re.findall(r'^\| `--(\w+)` \|([^|]*)\|', _read('docs/training.md'), re.MULTILINE))
  defaults = _flag_defaults(run_python(['train.py', '--helpshort']).stdout)
  assert len(defaults) >= 20
  for flag, default in defaults.items():
    assert flag in rows, 'docs/training.md has no row for --%s' % flag
    if default is not None:
      documented = rows[flag].strip().strip('`')
      assert documented == default or float(documented) == float(default), flag


_SCRIPTS_WITH_HELP = sorted(
    os.path.relpath(os.path.join(folder, name), REPO_ROOT)
    for folder, _, names in os.walk(os.path.join(REPO_ROOT, 'scripts'))
    for name in names
    if name.endswith('.sh') and '--help' in _read(os.path.join(folder, name)))


@pytest.mark.large
@pytest.mark.parametrize('script', _SCRIPTS_WITH_HELP)
def test_a_scripts_help_is_its_header_comment_and_nothing_else(script):
  header = []
  for line in _read(script).splitlines()[1:]:
    if not line.startswith('#'):
      break
    header.append(re.sub(r'^# ?', '', line))
  result = subprocess.run(['bash', script, '--help'],
                          cwd=REPO_ROOT,
                          capture_output=True,
                          text=True,
                          timeout=60)
  assert result.returncode == 0, result.stderr
  assert len(header) >= 3 and result.stdout.splitlines() == header, result.stdout


def test_a_command_no_rule_covers_fails_the_check(tmp_path):
  assert doc_commands.plan('rm -rf runs') is None
  assert doc_commands.plan('python train.py --train_dir runs/x') == (
      'run', 'python train.py --train_dir runs/x --max_steps=60')
  assert doc_commands.plan('scripts/cluster_study.sh --jobs 2') == (
      'run', "scripts/cluster_study.sh --smoke --modes 'one_process staleness1 sync2_examples' "
      '--jobs 2')
  assert doc_commands.plan('scripts/reproduce.sh --jobs 2')[0] == 'other_test'
  # The README's local cluster is run by docs/cluster.md, whose command adds
  # flags; that command itself is run.
  launcher = ('scripts/run_local_cluster.sh --num_ps 1 --num_workers 2 -- '
              '--mnist_dir m --train_dir r')
  assert doc_commands.plan(launcher)[0] == 'other_page'
  assert doc_commands.plan(launcher + ' --optimizer adam')[0] == 'run'
  page = tmp_path / 'page.md'
  page.write_text('x\n\n```sh\npython a.py \\\n  --b 1 && ls c  # comment\n```\n')
  relative = os.path.relpath(str(page), REPO_ROOT)
  assert doc_commands.shown_commands(relative) == [(4, 'sh', 'python a.py --b 1'),
                                                   (4, 'sh', 'ls c')]


@pytest.fixture(scope='module')
def sandbox(mnist_dir, tmp_path_factory):
  return doc_commands.make_sandbox(str(tmp_path_factory.mktemp('docs')), mnist_dir)


# Pages whose commands write runs of the same names as the README's with other
# settings (the cluster page's runs/cluster trains with Adam): each gets a
# sandbox of its own.
OWN_SANDBOX = ('docs/cluster.md',)


@pytest.mark.large
@pytest.mark.parametrize('page', doc_commands.DOC_PAGES)
def test_every_command_shown_runs(page, sandbox, mnist_dir, tmp_path):
  if page in OWN_SANDBOX:
    sandbox = doc_commands.make_sandbox(str(tmp_path), mnist_dir)
  doc_commands.check_page_commands(page, sandbox)
