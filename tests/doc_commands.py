"""The commands the README and docs/ show, and how a test runs each.

Every line of a ```sh block (continuations joined, comments dropped, `&&`
parts taken one by one) and every ```python block is a command. `plan`
says how a test runs it: as shown, with flags appended that make it small
(fewer steps or importance samples: the same program, the same code paths),
as a server that must answer, or, for what needs a scheduler, a registry or
hours or what a test of its own runs already, by naming the test that runs it
for real. A command no rule knows fails the docs tests, so a new one cannot
go unrun.
"""

import os
import re
import shlex
import socket
import subprocess
import sys
import time

from PIL import Image
from PIL import ImageDraw

from helpers import REPO_ROOT
from helpers import run_process
from helpers import small_mnist_dir
from helpers import start_process

DOC_PAGES = ['README.md'] + sorted(
    os.path.join('docs', name)
    for name in os.listdir(os.path.join(REPO_ROOT, 'docs'))
    if name.endswith('.md'))

_FENCE = re.compile(r'^```(\w*)\s*$')


def shown_commands(page):
  """[(line number, 'sh' or 'python', command)] of `page` (a repo path)."""
  with open(os.path.join(REPO_ROOT, page)) as f:
    lines = f.read().split('\n')
  commands = []
  block, language, start = None, None, 0
  for number, line in enumerate(lines, 1):
    fence = _FENCE.match(line)
    if fence and block is None:
      block, language, start = [], fence.group(1), number + 1
    elif fence:
      if language == 'python':
        commands.append((start, 'python', '\n'.join(block)))
      elif language == 'sh':
        commands.extend(_sh_commands(block, start))
      block = None
    elif block is not None:
      block.append(line)
  return commands


def _sh_commands(block, start):
  commands, pending, first = [], '', start
  for number, line in enumerate(block, start):
    if not pending:
      first = number
    pending += line
    if pending.endswith('\\'):
      pending = pending[:-1] + ' '
      continue
    words = shlex.split(pending, comments=True)
    pending = ''
    part = []
    for word in words + ['&&']:
      if word == '&&':
        if part:
          commands.append((first, 'sh', shlex.join(part)))
        part = []
      else:
        part.append(word)
  return commands


# Commands that need what a test machine cannot give in minutes: each names
# the test that runs it for real, and a string that test's source must hold.
RUN_BY_OTHER_TESTS = [
    (r'sbatch ', 'tests/test_launchers.py', 'test_slurm_batch_script_completes',
     'slurm_train.sbatch'),
    (r'scontrol (requeue|update JobId=JOBID StartTime=now)', 'tests/test_launchers.py',
     'test_slurm_requeue_resumes_from_the_checkpoint_of_the_signal', 'StartTime=now'),
    (r'scripts/kl_study\.sh', 'tests/test_kl_study.py',
     'test_kl_study_smoke_writes_the_tables_and_figures_and_resumes', 'kl_study.sh'),
    (r'python bench/throughput\.py', 'tests/test_bench.py', 'test_smoke_run_measures_everything',
     'bench/throughput.py'),
    # The reproduction takes hours; its smoke runs of these flags are tests of
    # their own (with --smoke a page's command would run the same thing again).
    (r'scripts/reproduce\.sh --jobs 2$', 'tests/test_reproduce.py',
     'test_smoke_reproduction_writes_the_report_resumes_and_runs_two_jobs_at_once', "'--jobs', '2'"
    ),
    (r'scripts/reproduce\.sh --presets \w+ --seeds \d$', 'tests/test_reproduce.py',
     'test_smoke_reproduction_writes_the_report_resumes_and_runs_two_jobs_at_once',
     "'--presets', 'original', '--seeds'"),
    (r"scripts/reproduce\.sh --presets 'cvae_tutorial kl_article'", 'tests/test_reproduce.py',
     'test_a_convolutional_preset_trains_on_its_own_data', "'cvae_tutorial kl_article'"),
    # Run as shown (made small) by a test of its own, which also checks what
    # it prints and writes.
    (r'python bench/side_by_side\.py$', 'tests/test_bench.py',
     'test_side_by_side_measures_one_process_against_one_thread_processes', 'bench/side_by_side.py'
    ),
    (r'scripts/ood_fashion\.sh --train_dir \S+$', 'tests/test_export.py',
     'test_out_of_distribution_script', 'ood_fashion.sh'),
    (r'python bench/cluster_scaling\.py', 'tests/test_bench.py',
     'test_cluster_scaling_measures_the_traffic_and_projects_the_table',
     'bench/cluster_scaling.py'),
]

# Commands that another page shows with more flags and runs: the README's
# local cluster is docs/cluster.md's (which also trains with Adam), run there.
RUN_ON_OTHER_PAGES = [
    (r'scripts/run_local_cluster\.sh --num_ps 1 --num_workers 2 -- --mnist_dir \S+ '
     r'--train_dir \S+$', 'docs/cluster.md'),
]

# Flags appended (or, for the scripts, put first, so that the flags shown
# still choose what runs) to make a command small.
_SMALLER = [
    (r'python train\.py ', ['--max_steps=60'], False),
    (r'scripts/run_local_cluster\.sh ', ['--max_steps=30'], False),
    (r'python evaluate\.py .*--watch', ['--iw_samples=4', '--watch_timeout_sec=3'], False),
    (r'python evaluate\.py ', ['--iw_samples=4'], False),
    (r'python sample_quality\.py --train_classifier', ['--classifier_steps=30'], False),
    (r'python sample_quality\.py ', ['--num_samples=300'], False),
    # One run of each kind the script starts (a process, a staleness, a
    # cluster); the other modes differ only in numbers.
    (r'scripts/cluster_study\.sh', ['--smoke', '--modes',
                                    'one_process staleness1 sync2_examples'], True),
    (r'scripts/iwae_short\.sh', ['--stages', '1', '--iw_samples', '4', '--max_steps', '60'], False),
]


def plan(command):
  """('run', command to run) | ('server', command) | ('pip', command) |
  ('ci', command) | ('other_test', (file, test name, string)) |
  ('other_page', (page, pattern)); None when no rule covers the command."""
  for pattern, path, test, needle in RUN_BY_OTHER_TESTS:
    if re.match(pattern, command):
      return 'other_test', (path, test, needle)
  for pattern, page in RUN_ON_OTHER_PAGES:
    if re.match(pattern, command):
      return 'other_page', (page, pattern)
  if command.startswith('pip install '):
    return 'pip', command
  if re.match(r'python -m pytest .*-m .?not large', command):
    return 'quick_tier', command
  if re.match(r'python -m pytest( |$)', command):
    return 'ci', command
  if command.startswith('tensorboard '):
    return 'server', command
  for pattern, extra, first in _SMALLER:
    if re.match(pattern, command):
      words = shlex.split(command)
      words = words[:1] + extra + words[1:] if first else words + extra
      return 'run', shlex.join(words)
  if re.match(
      r'(ls|ruff check|yapf|saved_model_cli (show|run)|'
      r'scripts/cluster/pai_submit\.sh --dry_run|python -c|'
      r'python (-m mnist_vae\.data_prep\.convert_to_records|export\.py|generate\.py)) ',
      command + ' '):
    return 'run', command
  return None


def make_sandbox(base, mnist_dir):
  """A copy of the repository's files at base/checkout with base/shared/mnist
  beside it, as on a developer's machine, and the files the commands take
  from the user (my_digit.jpg: a dark "3" on light paper, off-centre).

  base/shared/mnist holds the first 6,000 training and 1,000 test images of
  the real files: the default 5,000 for validation and 1,000 to train on,
  so that the commands run every stage as shown without spending minutes
  converting and evaluating all 70,000."""
  checkout = os.path.join(base, 'checkout')
  files = subprocess.run(['git', 'ls-files', '-z'], cwd=REPO_ROOT, check=True,
                         capture_output=True).stdout.decode().split('\0')
  for name in filter(None, files):
    source = os.path.join(REPO_ROOT, name)
    if not os.path.exists(source):
      continue  # Deleted in the working tree, not yet committed.
    target = os.path.join(checkout, name)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(source, 'rb') as f, open(target, 'wb') as g:
      g.write(f.read())
    os.chmod(target, os.stat(source).st_mode)
  small_mnist_dir(mnist_dir, os.path.join(base, 'shared', 'mnist'), num_train=6000, num_test=1000)
  digit = Image.new('L', (120, 160), 230)
  ImageDraw.Draw(digit).text((40, 50), '3', fill=20, font_size=70)
  digit.save(os.path.join(checkout, 'my_digit.jpg'))
  return checkout


def environment():
  """This Python first on PATH (so `python`, `ruff`, `tensorboard` and
  `saved_model_cli` are this installation's), quiet TensorFlow."""
  bin_dir = os.path.dirname(sys.executable)
  return dict(
      os.environ,
      PATH=bin_dir + os.pathsep + os.environ['PATH'],
      PYTHON=sys.executable,
      TF_CPP_MIN_LOG_LEVEL='2')


def run_command(command, cwd, timeout=600):
  return run_process(['bash', '-c', 'set -euo pipefail; ' + command],
                     timeout=timeout,
                     cwd=cwd,
                     env=environment())


def run_python_block(code, cwd, timeout=300):
  return run_process([sys.executable, '-c', code], timeout=timeout, cwd=cwd, env=environment())


def serve(command, cwd, timeout=120):
  """Starts a server command on a free port of 127.0.0.1 and returns the
  first HTTP status line it answers with; stops it."""
  with socket.socket() as probe:
    probe.bind(('127.0.0.1', 0))
    port = probe.getsockname()[1]
  process = start_process(
      ['bash', '-c', '%s --host 127.0.0.1 --port %d' % (command, port)],
      cwd=cwd,
      env=environment(),
      stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL)
  deadline = time.time() + timeout
  try:
    while time.time() < deadline:
      assert process.poll() is None, '%s ended with status %s' % (command, process.returncode)
      try:
        with socket.create_connection(('127.0.0.1', port), timeout=5) as connection:
          connection.sendall(b'GET / HTTP/1.0\r\nHost: localhost\r\n\r\n')
          return connection.recv(100).decode('latin-1').split('\r\n')[0]
      except OSError:
        time.sleep(0.5)
    raise AssertionError('%s did not answer on port %d within %d s' % (command, port, timeout))
  finally:
    process.kill()
    process.wait()


def function_source(path, name):
  """The source of test function `name` in `path` (a repo path); None if absent."""
  with open(os.path.join(REPO_ROOT, path)) as f:
    text = f.read()
  match = re.search(r'^def %s\(.*?(?=^\S)' % re.escape(name), text + '\nEND',
                    re.MULTILINE | re.DOTALL)
  return match.group(0) if match else None


def check_page_commands(page, sandbox):
  """Runs every command `page` shows, in order, in the sandbox; fails with
  the page, line and output of the first that does not work."""
  commands = shown_commands(page)
  assert commands or page.startswith('docs/'), page
  for line, language, command in commands:
    where = '%s:%d: %s' % (page, line, command)
    if language == 'python':
      result = run_python_block(command, sandbox)
      assert result.returncode == 0, '%s\n%s' % (where, result.stderr[-3000:])
      continue
    how = plan(command)
    assert how is not None, ('%s is a command no test runs: add a rule to '
                             'tests/doc_commands.py' % where)
    kind, what = how
    if kind == 'other_test':
      path, test, needle = what
      source = function_source(path, test)
      assert source is not None, '%s: %s has no %s' % (where, path, test)
      assert needle in source, '%s: %s::%s does not run %s' % (where, path, test, needle)
    elif kind == 'other_page':
      # That page must show the command with its flags first, and run it.
      other_page, pattern = what
      shown = [
          other for _, _, other in shown_commands(other_page)
          if re.match(pattern.rstrip('$'), other) and plan(other)[0] == 'run'
      ]
      assert shown, '%s: %s shows no command that starts the same way and runs' % (where,
                                                                                   other_page)
    elif kind == 'pip':
      # A dry run resolves the extras against what is installed and builds the
      # project's metadata, without replacing the installation under test.
      result = run_command(
          what.replace('pip install ', 'pip install --dry-run '
                       '--no-build-isolation --no-index ', 1), sandbox)
      assert result.returncode == 0, '%s\n%s' % (where, result.stderr[-3000:])
      assert 'does not provide the extra' not in result.stderr, '%s\n%s' % (where, result.stderr)
    elif kind == 'quick_tier':
      # Collected, not run (the suite runs every test): it must select the
      # tests that start no process, and only those.
      result = run_command(what + ' --collect-only -q -p no:randomly', REPO_ROOT)
      assert result.returncode == 0, '%s\n%s' % (where, result.stderr[-3000:])
      collected = [line for line in result.stdout.splitlines() if '::' in line]
      assert len(collected) > 100, '%s collected %d tests' % (where, len(collected))
      assert not any('test_launchers.py' in line or 'test_cluster.py::test_local' in line
                     for line in collected), where
    elif kind == 'ci':
      with open(os.path.join(REPO_ROOT, '.ci', 'run')) as f:
        ci = f.read()
      assert what.replace('python -m pytest ',
                          'python -m pytest -q ') in ci, ('%s is not the command .ci/run runs'
                                                          % where)
    elif kind == 'server':
      status = serve(what, sandbox)
      assert status.split()[1:2] == ['200'], '%s answered %r' % (where, status)
    else:
      result = run_command(what, sandbox)
      assert result.returncode == 0, '%s\nran as: %s\n%s' % (where, what, (result.stdout
                                                                           + result.stderr)[-4000:])
