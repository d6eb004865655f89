"""The run directory under the faults clusters bring: moved, full, damaged,
written twice. Real processes, real files, a real small tmpfs (root)."""

import glob
import json
import os
import re
import shutil
import signal
import subprocess

import pytest
import tensorflow as tf

from helpers import checkpoint_step
from helpers import run_python
from helpers import start_python
from helpers import wait_for
from mnist_vae import checkpoints
from mnist_vae import files
from mnist_vae import run_dir

SMALL = [
    '--hidden_units', '64', '--latent_dim', '8', '--batch_size', '64', '--validation_size', '200',
    '--eval_batch_size', '200', '--log_every_n_steps', '25', '--save_checkpoint_steps', '50',
    '--image_every_n_steps', '0', '--eval_every_n_steps', '0'
]


def _train(data_dir, train_dir, max_steps, *extra):
  return [
      'train.py', '--data_dir', data_dir, '--train_dir',
      str(train_dir), '--max_steps',
      str(max_steps)
  ] + SMALL + list(extra)


def _one_line_error(result, pattern):
  """The process failed with status 1 and one logged error matching pattern,
  no traceback; returns the match."""
  assert result.returncode == 1, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  errors = [line for line in result.stderr.splitlines() if line.startswith('E')]
  assert len(errors) == 1, result.stderr[-3000:]
  match = re.search(pattern, errors[0])
  assert match, (pattern, errors[0])
  return match


def _partial_files(root):
  """Files under root that a write cut short leaves behind."""
  found = []
  for pattern in ('*.tmp', '*.tmp[0-9a-f]*', '*tempstate*', '*.partial*', '*_temp', '.staging'):
    found += glob.glob(os.path.join(root, '**', pattern), recursive=True)
  return found


@pytest.fixture(scope='module')
def _run_trained_once(small_mnist_records, tmp_path_factory):
  train_dir = tmp_path_factory.mktemp('trained_run') / 'run'
  result = run_python(_train(small_mnist_records, train_dir, 150))
  assert result.returncode == 0, result.stderr[-3000:]
  return train_dir


@pytest.fixture
def trained_run(small_mnist_records, _run_trained_once, tmp_path):
  """A run trained to step 150 (checkpoints 0, 50, 100, 150) with an
  absolute --train_dir: each test's own copy of one training, which the
  tests move, damage and resume."""
  train_dir = tmp_path / 'run'
  shutil.copytree(_run_trained_once, train_dir)
  return small_mnist_records, train_dir


@pytest.mark.large
def test_moved_run_is_evaluated_exported_generated_and_resumed(trained_run, tmp_path):
  data_dir, train_dir = trained_run
  # The saver records names relative to the directory, not where it was.
  state = (train_dir / 'checkpoint').read_text()
  assert 'model_checkpoint_path: "model.ckpt-150"' in state
  assert '/' not in state
  # A directory written before that change names absolute paths, as the
  # saver wrote them: the same directory moved must work all the same.
  written = [str(train_dir / ('model.ckpt-%d' % step)) for step in (50, 100, 150)]
  tf.compat.v1.train.update_checkpoint_state(str(train_dir), written[-1], written)
  moved = tmp_path / 'moved' / 'elsewhere'
  moved.parent.mkdir()
  shutil.move(str(train_dir), str(moved))
  assert not train_dir.exists()

  evaluated = run_python(
      ['evaluate.py', '--data_dir', data_dir, '--train_dir',
       str(moved), '--iw_samples', '5'])
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  assert evaluated.stderr.count('(the run was moved or copied)') == 1
  assert json.loads(evaluated.stdout.splitlines()[-1])['checkpoint'] == \
      str(moved / 'model.ckpt-150')
  watched = run_python([
      'evaluate.py', '--data_dir', data_dir, '--train_dir',
      str(moved), '--iw_samples', '0', '--watch', '--watch_timeout_sec', '2'
  ])
  assert watched.returncode == 0, watched.stderr[-3000:]
  assert [json.loads(line)['step'] for line in watched.stdout.splitlines()] == [150]
  exported = run_python(
      ['export.py', '--train_dir',
       str(moved), '--export_dir',
       str(tmp_path / 'export')])
  assert exported.returncode == 0, exported.stderr[-3000:]
  assert (tmp_path / 'export' / 'saved_model.pb').exists()
  generated = run_python([
      'generate.py', '--train_dir',
      str(moved), '--output_dir',
      str(tmp_path / 'out'), '--num', '10'
  ])
  assert generated.returncode == 0, generated.stderr[-3000:]
  assert (tmp_path / 'out' / 'samples.png').exists()
  resumed = run_python(_train(data_dir, moved, 200))
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert 'Resuming from %s (step 150)' % (moved / 'model.ckpt-150') in resumed.stderr
  assert checkpoint_step(moved) == 200
  # The saver rewrote the `checkpoint` file with names inside the directory.
  assert '/' not in (moved / 'checkpoint').read_text()


def _truncate(checkpoint):
  data_file, = glob.glob(checkpoint + '.data-*')
  with open(data_file, 'r+b') as f:
    f.truncate(os.path.getsize(data_file) // 3)
  with open(data_file, 'rb') as f:
    return os.path.basename(data_file), f.read()


@pytest.mark.large
def test_damaged_checkpoints_are_skipped_loudly_and_kept(trained_run, tmp_path):
  data_dir, train_dir = trained_run
  damaged = str(train_dir / 'model.ckpt-150')
  data_name, damaged_bytes = _truncate(damaged)
  # Its index still reads: only reading every variable finds the damage.
  assert 'global_step' in dict(tf.train.list_variables(damaged))
  assert 'Read less bytes' in checkpoints.unreadable_reason(damaged)

  for program, extra in (('evaluate.py', ['--iw_samples', '0', '--data_dir', data_dir]),
                         ('export.py', ['--export_dir', str(tmp_path / 'export')]),
                         ('generate.py',
                          ['--output_dir',
                           str(tmp_path / 'out'), '--data_dir', data_dir])):
    result = run_python([program, '--train_dir', str(train_dir)] + extra)
    assert result.returncode == 0, (program, result.stderr[-3000:])
    assert re.search(
        r'Skipped checkpoint %s, which does not read completely '
        r'\(Read less bytes than requested\)' % re.escape(damaged),
        result.stderr), (program, result.stderr[-3000:])
    assert 'model.ckpt-100' in result.stderr, program
    # Readers leave the damaged files where they are.
    assert open(damaged + '.' + data_name.split('.', 2)[-1], 'rb').read() == damaged_bytes
  # Every reader takes an explicit --checkpoint through checkpoints.readable.
  result = run_python([
      'evaluate.py', '--checkpoint', damaged, '--train_dir',
      str(train_dir), '--data_dir', data_dir
  ])
  _one_line_error(result, r'Cannot read checkpoint %s: Read less bytes' % re.escape(damaged))

  resumed = run_python(_train(data_dir, train_dir, 200))
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert 'Skipped checkpoint %s' % damaged in resumed.stderr
  assert 'Resuming from %s (step 100)' % (train_dir / 'model.ckpt-100') in resumed.stderr
  # The damaged files are kept, byte for byte, out of the way of new saves.
  kept = train_dir / run_dir.DAMAGED_SUBDIR / data_name
  assert kept.read_bytes() == damaged_bytes
  assert checkpoint_step(train_dir) == 200
  assert checkpoints.unreadable_reason(damaged) is None  # Saved anew.

  # Nothing readable at all: one line that lists what was tried.
  for checkpoint in checkpoints.in_directory(str(train_dir)):
    _truncate(checkpoint)
  for program, extra in (('evaluate.py', []), ('train.py', SMALL)):
    result = run_python([program, '--train_dir', str(train_dir), '--data_dir', data_dir] + extra)
    match = _one_line_error(result,
                            r'No readable checkpoint in %s; tried (.*)' % re.escape(str(train_dir)))
    assert match.group(1).count('Read less bytes than requested') == 5


@pytest.mark.large
def test_corrupted_bytes_fail_the_checksum(trained_run):
  _, train_dir = trained_run
  checkpoint = str(train_dir / 'model.ckpt-150')
  data_file, = glob.glob(checkpoint + '.data-*')
  content = bytearray(open(data_file, 'rb').read())
  content[len(content) // 2] ^= 0xFF
  open(data_file, 'wb').write(bytes(content))
  assert 'Checksum does not match' in checkpoints.unreadable_reason(checkpoint)
  found = checkpoints.newest_readable(str(train_dir))
  assert found.checkpoint == str(train_dir / 'model.ckpt-100') and found.step == 100
  assert [path for path, _ in found.skipped] == [checkpoint]


@pytest.mark.large
def test_second_writer_is_refused_and_kill_9_leaves_no_lock(small_mnist_records, tmp_path):
  train_dir = tmp_path / 'run'
  first = start_python(_train(small_mnist_records, train_dir, 10**6), str(tmp_path / 'first.log'))
  wait_for(lambda: checkpoint_step(train_dir) >= 50, 'a checkpoint', [first])
  second = run_python(_train(small_mnist_records, train_dir, 10**6))
  match = _one_line_error(
      second, r'--train_dir %s is being written by another training process: '
      r'pid (\d+) on host (\S+) \(since ([\d-]+ [\d:]+ UTC)\), which holds the '
      r'lock on %s' % (re.escape(str(train_dir)), re.escape(str(train_dir / run_dir.LOCK_FILE))))
  assert int(match.group(1)) == first.pid
  assert 'pass another --train_dir' in second.stderr
  # A reader beside the writer takes no lock.
  reader = run_python([
      'evaluate.py', '--data_dir', small_mnist_records, '--train_dir',
      str(train_dir), '--iw_samples', '0', '--output',
      str(tmp_path / 'eval.json')
  ])
  assert reader.returncode == 0, reader.stderr[-3000:]
  first.send_signal(signal.SIGKILL)
  first.wait()
  stopped_at = checkpoint_step(train_dir)
  third = run_python(_train(small_mnist_records, train_dir, stopped_at + 50))
  assert third.returncode == 0, third.stderr[-3000:]
  assert 'Resuming from' in third.stderr


def test_lease_on_a_filesystem_without_locks():
  # tf.io.gfile's in-memory file system: a path with a scheme, as gs:// is.
  train_dir = 'ram://lease_test/run'
  tf.io.gfile.makedirs(train_dir)
  lease_path = os.path.join(train_dir, run_dir.LEASE_FILE)
  with run_dir.WriterLock(train_dir, lease_stale_sec=60) as holder:
    lease = files.read_json(lease_path)
    assert lease['pid'] == os.getpid()
    with pytest.raises(run_dir.RunDirBusyError, match=r'lease .* renewed \d+ s ago'):
      run_dir.WriterLock(train_dir, lease_stale_sec=60).__enter__()
    holder.check()  # Still ours.
  assert not tf.io.gfile.exists(lease_path)  # Released.

  # A holder killed outright leaves its lease; it is taken over once stale,
  # and a holder that finds another's name in it stops.
  stale = dict(lease, heartbeat=lease['heartbeat'] - 120, token='dead', pid=1)
  files.write_json(lease_path, stale)  # As our writers write it: whole.
  with pytest.raises(run_dir.RunDirBusyError):
    run_dir.WriterLock(train_dir, lease_stale_sec=600).__enter__()
  with run_dir.WriterLock(train_dir, lease_stale_sec=0.4) as holder:
    files.write_json(lease_path,
                     dict(stale, token='intruder', heartbeat=lease['heartbeat'] + 10**6))
    wait_for(lambda: holder.lost_to is not None, 'the lost lease noticed', timeout=10)
    with pytest.raises(run_dir.RunDirBusyError, match='took over this run'):
      holder.check()
  assert tf.io.gfile.exists(lease_path)  # The new holder's, left alone.
  tf.io.gfile.rmtree('ram://lease_test')


@pytest.fixture
def small_tmpfs(tmp_path):
  """mount_tmpfs(size): a real tmpfs of that size, unmounted at the end."""
  if os.geteuid() != 0:
    if os.environ.get('CI'):
      pytest.fail('the disk-full tests mount a tmpfs, which needs root')
    pytest.skip('mounting a tmpfs needs root')
  mounted = []

  def mount_tmpfs(size, name='disk'):
    directory = tmp_path / name
    directory.mkdir()
    subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=' + size, 'tmpfs',
                    str(directory)],
                   check=True)
    mounted.append(directory)
    return directory

  yield mount_tmpfs
  for directory in mounted:
    subprocess.run(['umount', '-l', str(directory)], check=False)


@pytest.mark.large
def test_disk_full_while_training_is_one_line_then_resumes(small_mnist_records, small_tmpfs):
  disk = small_tmpfs('18m')
  train_dir = disk / 'run'
  # The default model in SGD: 5.3 MB a checkpoint, so the fourth one fails.
  command = [
      'train.py', '--data_dir', small_mnist_records, '--train_dir',
      str(train_dir), '--max_steps', '400', '--save_checkpoint_steps', '100',
      '--eval_every_n_steps', '0', '--image_every_n_steps', '0'
  ]
  result = run_python(command)
  match = _one_line_error(
      result, r'No space left on device writing (\S+)/model\.ckpt-(\d+); the last '
      r'complete checkpoint is (\S+)/model\.ckpt-(\d+) \(untouched\)\. Free space '
      r'and re-run the same command to resume\.$')
  assert match.group(1) == match.group(3) == str(train_dir)
  failed, last = int(match.group(2)), int(match.group(4))
  assert failed == last + 100 and last >= 100
  assert _partial_files(disk) == []
  assert checkpoints.unreadable_reason(str(train_dir / ('model.ckpt-%d' % last))) is None
  assert checkpoint_step(train_dir) == last
  subprocess.run(['mount', '-o', 'remount,size=48m', str(disk)], check=True)
  result = run_python(command)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Resuming from %s/model.ckpt-%d' % (train_dir, last) in result.stderr
  assert checkpoint_step(train_dir) == 400
  assert json.loads((train_dir / 'metrics.json').read_text())['step'] == 400


def _fill(disk):
  """Writes a file into `disk` until no byte is left."""
  with open(disk / 'filler', 'wb', buffering=0) as f:
    for chunk in (1 << 20, 4096, 1):
      try:
        while True:
          f.write(b'\0' * chunk)
      except OSError:
        pass


@pytest.fixture(scope='module')
def small_run(small_mnist_records, tmp_path_factory):
  train_dir = tmp_path_factory.mktemp('small_run') / 'run'
  result = run_python(_train(small_mnist_records, train_dir, 50))
  assert result.returncode == 0, result.stderr[-3000:]
  return train_dir


@pytest.mark.large
def test_every_writer_on_a_full_disk_is_one_line(small_mnist_records, small_run, small_tmpfs,
                                                 mnist_dir):
  disk = small_tmpfs('8m')
  # A run copied onto the disk: evaluate.py writes its events there.
  copied = disk / 'run'
  shutil.copytree(small_run, copied)
  _fill(disk)
  data = ['--data_dir', small_mnist_records]
  cases = {
      'train.py': (_train(small_mnist_records, disk / 'new_run', 100), disk / 'new_run'),
      'generate.py PNG':
          (['generate.py', '--train_dir',
            str(small_run), '--output_dir',
            str(disk / 'out')] + data, disk / 'out'),
      'export.py':
          (['export.py', '--train_dir',
            str(small_run), '--export_dir',
            str(disk / 'export')], disk / 'export'),
      'evaluate.py events': ([
          'evaluate.py', '--train_dir',
          str(copied), '--iw_samples', '0', '--output',
          str(disk.parent / 'e.json')
      ] + data, copied / 'eval_test'),
      'evaluate.py JSON': ([
          'evaluate.py', '--train_dir',
          str(small_run), '--iw_samples', '0', '--output',
          str(disk / 'eval.json')
      ] + data, disk / 'eval.json'),
      'TFRecord conversion': ([
          '-m', 'mnist_vae.data_prep.convert_to_records', '--mnist_dir', mnist_dir, '--output_dir',
          str(disk / 'records')
      ], disk / 'records'),
  }
  for name, (command, written) in cases.items():
    result = run_python(command)
    match = _one_line_error(result, r'No space left on device writing (\S+?)[.;]? ')
    assert match.group(1).startswith(str(written)), (name, match.group(0))
    assert 'Free space and re-run the same command' in result.stderr, name
    assert _partial_files(disk) == [], name
