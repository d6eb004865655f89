"""Speed of this project against its peers, its multiply floors and the
original script, with every performance target printed as met or not met.

Measures in one process and one run, alternating the training contenders
round by round and reporting medians (a noisy machine slows all alike):

  1. train.py's training loop (build_training_graph, its monitored session
     and training.StepRunner, with every safety check) fed from TFRecords
     with Adam and with SGD, Adam with --matmul_precision=bfloat16, and Adam
     fed from memory;
  2. the peers: the fastest plain TF2 program we could write
     (bench/fast_tf2_peer.py: fused Adam kernels, data in memory, 1 and 10
     steps per call), the JAX one (bench/jax_peer.py, jit + optax, when the
     bench extra is installed), the straightforward TF2 program of
     bench/tf2_peer.py (Keras 3's Adam, and SGD) and the Keras 3 model of
     bench/keras_peer.py trained by `fit`; the fastest Adam peer is the
     "best peer" every training target is measured against;
  2b. whole processes, as a user runs them: `train.py --optimizer=adam` (its
     TFRecords, hooks, checks, periodic validation and checkpoints) against
     the best peers run as programs, each at two lengths (300 and 2,300
     steps) so that the difference is the steady state without start-up;
  3. the ceiling: one step's matrix multiplies alone (forward and both
     backward products of every layer), float32 and bfloat16;
  4. the k=1000 importance-weighted NLL of the whole test set through
     evaluate.py's evaluator, float32 and bfloat16, against its floor: the
     decoder's multiplies for as many passes (10 million), timed alone, and
     the float32 NLL's parts, each timed alone (the decoder with its biases
     and activations, the likelihood of every pixel, the draws of z);
  5. which oneDNN kernels the bfloat16 multiplies ran (ONEDNN_VERBOSE);
  6. with --original_script: `train.py --flagfile configs/original.flags`
     (everything on) against the original TF1 script on the same TFRecords
     (bench/original_runner.py), both as whole processes;
  7. with --end_to_end: the work of `scripts/reproduce.sh --presets upstream
     --seeds 0` (train, then k=1000 evaluation of validation and test), here
     and, with --baseline_repo, in another checkout (e.g. an older commit);
  8. MNIST -> TFRecords conversion, the input pipeline alone, evaluation
     throughput, and the peak RSS of a real train.py process.

Usage:
  python bench/throughput.py                                 # 1-5 and 8, ~10 min
  python bench/throughput.py --original_script ../shared/reference/original_vae_tf1.py \
      --end_to_end --baseline_repo /tmp/main_checkout --json bench.json
  python bench/throughput.py --smoke                         # seconds, synthetic data
  python bench/throughput.py --sections=iwae                 # the IWAE preset alone
"""

import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import platform
import re
import subprocess
import tempfile
import time

from absl import app
from absl import flags
import keras_peer  # bench/keras_peer.py, beside this script.
import numpy as np
import tensorflow.compat.v1 as tf

import fast_tf2_peer  # bench/fast_tf2_peer.py, beside this script.
from mnist_vae import architectures
from mnist_vae import checkpoints
from mnist_vae import evaluation
from mnist_vae import fast_step
from mnist_vae import files
from mnist_vae import input_pipeline
from mnist_vae import model
from mnist_vae import settings
from mnist_vae import training
from mnist_vae.data_prep import convert_to_records
from mnist_vae.data_prep import idx
from mnist_vae.data_prep import records
import tf2_peer  # bench/tf2_peer.py, beside this script.

try:
  import jax  # noqa: F401 (only whether the optional bench extra is installed)

  import jax_peer  # bench/jax_peer.py, beside this script.
except ImportError:
  jax_peer = None

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH_DIR = os.path.join(REPO_ROOT, 'bench')

flags.DEFINE_string(
    'mnist_dir',
    os.path.join(REPO_ROOT, os.pardir, 'shared', 'mnist'),
    help='The four MNIST IDX files (converted, and timed).')
flags.DEFINE_integer(
    'rounds', 5, lower_bound=1, help='Rounds; each measures every training contender once.')
flags.DEFINE_integer('steps', 200, lower_bound=1, help='Training steps per contender per round.')
flags.DEFINE_integer('batch_size', 128, lower_bound=1, help='Batch size.')
flags.DEFINE_integer(
    'process_rounds',
    3,
    lower_bound=0,
    help='Rounds of the whole-process measurement (each runs '
    'every process contender at 300 and 2,300 steps); 0 skips it.')
flags.DEFINE_integer(
    'iw_samples', 1000, lower_bound=1, help='Importance samples of the NLL measurement.')
flags.DEFINE_string(
    'original_script',
    None,
    help='The original TF1 script: time it against train.py '
    '--flagfile configs/original.flags (about 5 minutes).')
flags.DEFINE_boolean(
    'end_to_end',
    False,
    help='Time the work of scripts/reproduce.sh --presets '
    'upstream --seeds 0 (about 5 minutes).')
flags.DEFINE_string('baseline_repo', None, help='With --end_to_end: also time it in this checkout.')
flags.DEFINE_boolean(
    'smoke',
    False,
    help='Tiny synthetic data, 1 round of 3 steps: checks that '
    'every measurement runs, in seconds.')
flags.DEFINE_string('json', None, help='Also write the results to this file.')
SECTIONS = ('core', 'iwae', 'cvae')
flags.DEFINE_list(
    'sections',
    list(SECTIONS),
    help='What to measure: core (the default MLP: 1-5 and 8), iwae (the IWAE preset at batch '
    '20), cvae (the CVAE tutorial preset); e.g. --sections=iwae alone.')
flags.register_validator(
    'sections',
    lambda sections: sections and set(sections) <= set(SECTIONS),
    message='--sections takes one or more of %s' % ','.join(SECTIONS))
FLAGS = flags.FLAGS

TRAIN = 'train.py loop, TFRecords, adam'
FAST_PEER = 'fast TF2 peer, %d step(s) per call'
JAX_PEER = 'JAX jit peer, %d step(s) per call'
# The fast peers' steps per call: one, and ten (in one tf.function or
# compiled loop, which lets a step start while the last one's updates end).
STEPS_PER_CALL = (1, 10)
PEERS = tuple(FAST_PEER % n for n in STEPS_PER_CALL) + tuple(
    JAX_PEER % n for n in STEPS_PER_CALL) + ('TF2 peer (tf.function), adam', 'Keras 3 fit, adam')
TRAIN_PROCESS = 'train.py --optimizer=adam'
# Whole processes: steps of the short and the long run of each.
PROCESS_STEPS = (300, 2300)


def _synthetic_idx_dir(directory):
  rng = np.random.RandomState(0)
  images = (rng.rand(600, 28, 28) > 0.8).astype(np.uint8) * 255
  contents = {
      idx.TRAIN_IMAGES: idx.encode_images(images[:500]),
      idx.TRAIN_LABELS: idx.encode_labels(np.arange(500, dtype=np.uint8) % 10),
      idx.TEST_IMAGES: idx.encode_images(images[500:]),
      idx.TEST_LABELS: idx.encode_labels(np.arange(100, dtype=np.uint8) % 10)
  }
  os.makedirs(directory)
  for name, data in contents.items():
    with open(os.path.join(directory, name), 'wb') as f:
      f.write(data)
  return directory


def _timed(function, count):
  """Runs function() and returns count / seconds."""
  start = time.perf_counter()
  function()
  return count / (time.perf_counter() - start)


def dense_shapes(network, scope=None):
  """The (fan_in, units) of each matrix product of `network`'s forward pass
  (of the encoder or decoder alone with `scope`), from its description: the
  encoder's two heads are one product of twice the width, as model.LayerOps
  computes them."""
  shapes = []
  for layer in architectures.parameter_layers(network):
    if scope and layer.scope != scope:
      continue
    if layer.name == network.head[1] and layer.scope == architectures.ENCODER_SCOPE:
      fan_in, units = shapes.pop()
      shapes.append((fan_in, 2 * units))
    else:
      shapes.append(tuple(layer.weights_shape))
  return tuple(shapes)


def _train_defaults():
  """run_training's settings at train.py's defaults, from the library's
  settings types (whose defaults train.py's flags take)."""
  return {
      'network': architectures.network(**training.NetworkSettings()._asdict()),
      'optimizer_settings': training.OptimizerSettings(),
      'schedule': training.Schedule(),
      'step_settings': training.StepSettings(),
      'eval_batch_size': training.RunSettings().eval_batch_size,
      'threads': settings.Threads()
  }


class ProjectLoop(object):
  """train.py's graph and session; feeds from TFRecords or from memory."""

  def __init__(self,
               splits,
               work_dir,
               optimizer,
               batch_size,
               steps,
               memory_images=None,
               matmul_precision='float32'):
    self._steps, self._batch_size = steps, batch_size
    self.work_dir = work_dir
    train_images_fn, self._load = None, None
    if memory_images is not None:
      train_images_fn = lambda: self._memory_batches(memory_images, batch_size)
    # train.py's defaults, from the library's settings types.
    defaults = _train_defaults()
    self.graph = training.build_training_graph(
        train_path=splits['train'][0],
        num_train=splits['train'][1],
        fixed_images=np.zeros((100, records.IMAGE_PIXELS), np.float32),
        network=defaults['network'],
        optimizer_settings=defaults['optimizer_settings']._replace(optimizer=optimizer),
        step_settings=defaults['step_settings']._replace(
            batch_size=batch_size, matmul_precision=matmul_precision),
        eval_batch_size=defaults['eval_batch_size'],
        train_images_fn=train_images_fn)
    schedule = defaults['schedule']._replace(max_steps=10**9)
    with self.graph.tf_graph.as_default():
      self.session = training.monitored_session(self.graph, work_dir, schedule,
                                                training.session_config(defaults['threads']))
    if self._load:
      self.session.run_step_fn(lambda step_context: step_context.session.run(
          self._load[0], {self._load[1]: memory_images}))
    self._runner = training.StepRunner(
        self.session, self.graph.train_fetches, schedule, through_hooks_always=False)
    self._step = 0
    for _ in range(20):
      self._run_step()

  def _run_step(self):
    self._step = int(self._runner.run(self._step)['step'])

  def _memory_batches(self, images_uint8, batch_size):
    # A local variable is filled once through a placeholder: a numpy constant
    # would be copied into the graph (and each checkpoint's .meta).
    data = tf.Variable(
        tf.zeros(images_uint8.shape, tf.uint8),
        trainable=False,
        collections=[tf.GraphKeys.LOCAL_VARIABLES])
    placeholder = tf.placeholder(tf.uint8, images_uint8.shape)
    self._load = (data.assign(placeholder), placeholder)
    index = tf.random.uniform([batch_size], 0, images_uint8.shape[0], tf.int32)
    return input_pipeline.normalize(tf.gather(data, index))

  def measure(self):

    def run():
      # In the graph, as in train.py: the checkpoint hook may save mid-run.
      with self.graph.tf_graph.as_default():
        for _ in range(self._steps):
          self._run_step()

    return _timed(run, self._steps * self._batch_size)

  def close(self):
    with self.graph.tf_graph.as_default():  # Closing saves, which needs the graph.
      self.session.close()

  def evaluation_examples_per_sec(self, images):
    return self.session.run_step_fn(lambda step_context: _timed(
        lambda: self.graph.evaluator.evaluate(step_context.session, images), len(images)))


def _chained_runs(runs, body):
  """A while loop running body() `runs` times in one session.run (the ~0.2 ms
  cost of a run then does not cap what is measured); its value is the sum of
  body()'s results."""

  def step(i, total):
    return i + 1, total + tf.cast(body(), tf.float32)

  return tf.while_loop(lambda i, _: i < runs, step, [tf.constant(0), tf.constant(0.0)])[1]


class PipelineAlone(object):
  """The training input pipeline with nothing consuming but a sum."""

  def __init__(self, path, num_examples, batch_size, steps):
    self._count = steps * 4 * batch_size
    graph = tf.Graph()
    with graph.as_default():
      iterator = tf.data.make_one_shot_iterator(
          input_pipeline.train_dataset(path, batch_size, seed=0, shuffle_buffer_size=num_examples))
      self._batches = _chained_runs(steps * 4, lambda: tf.reduce_sum(iterator.get_next()))
    self._session = tf.Session(graph=graph)
    self._session.run(self._batches)

  def measure(self):
    return _timed(lambda: self._session.run(self._batches), self._count)


class Tf2Peer(object):

  def __init__(self, images_uint8, batch_size, steps, optimizer):
    self._step = tf2_peer.make_peer_step(images_uint8, batch_size, optimizer=optimizer)
    self._steps, self._batch_size = steps, batch_size
    for _ in range(20):
      self._step()

  def measure(self):

    def run():
      for _ in range(self._steps):
        loss = self._step()
      loss.numpy()

    return _timed(run, self._steps * self._batch_size)


class FastPeer(object):
  """fast_tf2_peer or jax_peer, `steps_per_call` steps per call."""

  def __init__(self, peer_module, images_uint8, batch_size, steps, steps_per_call):
    self._step = peer_module.make_step(images_uint8, batch_size, steps_per_call=steps_per_call)
    self._calls = max(steps // steps_per_call, 1)
    self._examples = self._calls * steps_per_call * batch_size
    for _ in range(max(20 // steps_per_call, 2)):
      float(self._step())

  def measure(self):

    def run():
      for _ in range(self._calls):
        loss = self._step()
      float(loss)

    return _timed(run, self._examples)


class KerasPeer(object):

  def __init__(self, images_uint8, batch_size, steps):
    self._fit = keras_peer.make_peer_fit(images_uint8, batch_size)
    self._steps, self._batch_size = steps, batch_size
    self._fit(20)

  def measure(self):
    return _timed(lambda: self._fit(self._steps), self._steps * self._batch_size)


class MatmulCeiling(object):
  """Every matrix multiply of a training step, and nothing else."""

  def __init__(self, network, batch_size, steps, dtype=tf.float32):
    shapes = dense_shapes(network)
    graph = tf.Graph()
    with graph.as_default():
      products = []
      for fan_in, fan_out in shapes:
        x = tf.Variable(tf.cast(tf.random.normal([batch_size, fan_in]), dtype))
        w = tf.Variable(tf.cast(tf.random.normal([fan_in, fan_out]), dtype))
        dy = tf.Variable(tf.cast(tf.random.normal([batch_size, fan_out]), dtype))
        products += [
            tf.matmul(x, w),
            tf.matmul(dy, w, transpose_b=True),
            tf.matmul(x, dy, transpose_a=True)
        ]
      self._step = tf.add_n([tf.cast(p[0, 0], tf.float32) for p in products])
      init = tf.global_variables_initializer()
    self.flops_per_step = batch_size * architectures.training_flops_per_example(network)
    self._session = tf.Session(graph=graph)
    self._session.run(init)
    self._steps, self._batch_size = steps, batch_size
    for _ in range(20):
      self._session.run(self._step)

  def measure(self):

    def run():
      for _ in range(self._steps):
        self._session.run(self._step)

    return _timed(run, self._steps * self._batch_size)


def _seconds_for_passes(build, rows, passes, timed_passes):
  """Seconds `passes` decoder passes take at the pace of body() = build(),
  which does the work of `rows` passes: build() makes a fresh graph's
  variables; body() is run over about `timed_passes` passes in one
  session.run and the time scaled."""
  graph = tf.Graph()
  with graph.as_default():
    body = build()
    runs = max(timed_passes // rows, 1)
    # The first call outside the loop also creates any variables body() uses.
    warm_up, total = body(), _chained_runs(runs, body)
    init = tf.global_variables_initializer()
  with tf.Session(graph=graph) as session:
    session.run(init)
    session.run(warm_up)
    start = time.perf_counter()
    session.run(total)
    return (time.perf_counter() - start) * passes / (runs * rows)


def decoder_multiply_floor_sec(network, passes, timed_passes, dtype, rows=10000):
  """Seconds the decoder's three multiplies take for `passes` decoder passes
  (rows of z), timed on `timed_passes` of them in runs of `rows` rows and
  scaled: the floor under the importance-weighted NLL."""
  decoder_shapes = dense_shapes(network, architectures.DECODER_SCOPE)

  def build():
    inputs = [
        tf.Variable(tf.cast(tf.random.normal([rows, fan_in]), dtype))
        for fan_in, _ in decoder_shapes
    ]
    weights = [
        tf.Variable(tf.cast(tf.random.normal([fan_in, fan_out]) * 0.05, dtype))
        for fan_in, fan_out in decoder_shapes
    ]
    # Each product from its own input, as in the decoder, none skippable.
    return lambda: tf.add_n(
        [tf.cast(tf.matmul(x, w)[-1, -1], tf.float32) for x, w in zip(inputs, weights)])

  return _seconds_for_passes(build, rows, passes, timed_passes)


def nll_parts_sec(network, passes, timed_passes, iw_samples, rows=10000, images_per_batch=100):
  """{part: seconds for `passes` passes} of the float32 importance-weighted
  NLL, each part timed alone as evaluation.Evaluator runs it: the decoder
  (its products with their biases, tanh and elu), the likelihood of every
  pixel, and the keyed draws of z (iw_samples per image)."""

  def decoder():
    z = tf.Variable(tf.random.normal([rows, network.latent_dim]))
    return lambda: model.decode(z, network)[-1, -1]

  def likelihood():
    images = tf.Variable(tf.random.uniform([images_per_batch, architectures.IMAGE_PIXELS]))
    logits = tf.Variable(5.0 * tf.random.normal(
        [rows // images_per_batch, images_per_batch, architectures.IMAGE_PIXELS]))
    return lambda: tf.reduce_sum(fast_step.compiled_log_likelihood(network)(images, logits))

  def draws():
    indices = tf.range(images_per_batch, dtype=tf.int64)
    return lambda: evaluation.keyed_normal_draws(evaluation.DEFAULT_SEED, indices, evaluation.
                                                 IMPORTANCE_DRAWS, iw_samples, network.latent_dim)[
                                                     -1, -1, -1]

  return {
      'decoder': _seconds_for_passes(decoder, rows, passes, timed_passes),
      'likelihood': _seconds_for_passes(likelihood, rows, passes, timed_passes),
      'draws': _seconds_for_passes(draws, images_per_batch * iw_samples, passes, timed_passes),
  }


def nll_seconds(checkpoint, images, iw_samples, matmul_precision):
  """(seconds, mean iw_nll) of the k-sample importance-weighted NLL of
  `images` through the evaluator evaluate.py uses."""
  with tf.Graph().as_default():
    evaluator = evaluation.Evaluator(
        checkpoints.network(checkpoint),
        iw_samples=iw_samples,
        matmul_dtype=model.MATMUL_DTYPES[matmul_precision])
    with tf.Session() as session:
      checkpoints.restore(session, checkpoint)
      evaluator.evaluate(session, images[:100])  # Warm-up.
      start = time.perf_counter()
      result = evaluator.evaluate(session, images)
      return time.perf_counter() - start, result['iw_nll']


_ONEDNN_PROBE = '''
import tensorflow.compat.v1 as tf
with tf.Graph().as_default():
  for dtype in (tf.float32, tf.bfloat16):
    with tf.variable_scope(dtype.name):
      x = tf.random.uniform([128, 784])
      w = tf.get_variable('weights', [784, 500])
      y = tf.matmul(tf.cast(x, dtype), tf.cast(w, dtype))
      gradient = tf.gradients(tf.reduce_sum(tf.cast(y, tf.float32)), x)
  with tf.Session() as session:
    session.run(tf.global_variables_initializer())
    session.run(tf.get_collection(tf.GraphKeys.TRAINABLE_VARIABLES) + [gradient])
'''


def onednn_matmul_kernels():
  """{'float32'|'bfloat16': sorted oneDNN implementation names} of the
  multiplies of a dense layer, forward and backward, from ONEDNN_VERBOSE; {}
  when oneDNN is off."""
  output = subprocess.run([sys.executable, '-c', _ONEDNN_PROBE],
                          capture_output=True,
                          text=True,
                          cwd=REPO_ROOT,
                          env=dict(os.environ, ONEDNN_VERBOSE='1', TF_CPP_MIN_LOG_LEVEL='2')).stdout
  kernels = {}
  for line in output.splitlines():
    # onednn_verbose,v1,primitive,exec,cpu,matmul,brg_matmul:avx512_core_bf16,undef,src:bf16:...
    match = re.search(
        r'exec,cpu,(?:inner_product|matmul),([^,]+),[^,]*,'
        r'src(?:_f32|_bf16)?:(\w+)', line)
    if match:
      precision = 'bfloat16' if match.group(2) == 'bf16' else 'float32'
      kernels.setdefault(precision, set()).add(match.group(1))
  return {key: sorted(value) for key, value in kernels.items()}


def _process_seconds(command, cwd=REPO_ROOT):
  start = time.perf_counter()
  process = subprocess.run(
      command,
      cwd=cwd,
      capture_output=True,
      text=True,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
  if process.returncode:
    raise RuntimeError('%s exited with %d:\n%s' %
                       (' '.join(command), process.returncode, process.stderr[-3000:]))
  return time.perf_counter() - start


def steady_process_rates(commands, lengths, rounds, examples_per_step):
  """({name: examples/s}, {name: [examples/s of each round]}) of whole
  processes: commands maps each contender to a function of a step count
  giving its command line. Each runs at both `lengths` (short, long), and its
  rate is the extra steps' examples over the extra seconds, so that
  start-up, graph building, compilation and the final evaluation cancel;
  contenders alternate within each round; medians over the rounds. With one
  length (--smoke: the programs only have to work) the rate is the whole
  run's, start-up included."""
  samples = {name: [] for name in commands}
  for _ in range(rounds):
    for name, command in commands.items():
      seconds = [_process_seconds(command(steps)) for steps in lengths]
      if len(lengths) == 2:
        steps, elapsed = lengths[1] - lengths[0], seconds[1] - seconds[0]
      else:
        (steps,), (elapsed,) = lengths, seconds
      samples[name].append(steps * examples_per_step / max(elapsed, 1e-3))
  return {name: float(np.median(values)) for name, values in samples.items()}, samples


def preset_train_py(flagfile, mnist_dir, data_dir, work, prefix):
  """(command, train_dirs): command(steps) is train.py's command line for
  the preset, each call in a run directory of its own under `work`
  (prefix_0, prefix_1, ...), appended to train_dirs."""
  train_dirs = []

  def command(steps):
    train_dirs.append(os.path.join(work, '%s_%d' % (prefix, len(train_dirs))))
    return [
        sys.executable, 'train.py', '--flagfile=' + flagfile, '--mnist_dir=' + mnist_dir,
        '--data_dir=' + data_dir, '--train_dir=' + train_dirs[-1],
        '--max_steps=%d' % steps
    ]

  return command, train_dirs


def whole_processes(data_dir, mnist_dir, work, rounds, batch_size, smoke):
  """steady_process_rates of train.py and the peers' programs at PROCESS_STEPS."""
  peer_programs = {FAST_PEER % n: ('fast_tf2_peer.py', n) for n in STEPS_PER_CALL}
  if jax_peer:
    peer_programs[JAX_PEER % STEPS_PER_CALL[-1]] = ('jax_peer.py', STEPS_PER_CALL[-1])
  train_dirs = []

  def train_py(steps):
    train_dirs.append(os.path.join(work, 'process_%d' % len(train_dirs)))
    return [
        sys.executable, 'train.py', '--optimizer=adam', '--data_dir=' + data_dir,
        '--batch_size=%d' % batch_size,
        '--max_steps=%d' % steps, '--train_dir=' + train_dirs[-1]
    ]

  def peer(program, steps_per_call):
    return lambda steps: [
        sys.executable,
        os.path.join(BENCH_DIR, program), '--mnist_dir=' + mnist_dir,
        '--batch_size=%d' % batch_size,
        '--steps=%d' % steps,
        '--steps_per_call=%d' % steps_per_call
    ]

  commands = {TRAIN_PROCESS: train_py}
  commands.update({name: peer(*program) for name, program in peer_programs.items()})
  return steady_process_rates(commands, (30,) if smoke else PROCESS_STEPS, rounds, batch_size)


# --smoke: train.py runs that only check the whole process works.
_SMOKE_TRAIN_FLAGS = ['--max_steps=30', '--hidden_units=32']


def original_script_vs_train_py(original_script, data_dir, work, smoke):
  """Wall seconds of the original script (through bench/original_runner.py)
  and of train.py with configs/original.flags, on the same TFRecords."""
  extra = _SMOKE_TRAIN_FLAGS if smoke else []
  train_sec = _process_seconds([
      sys.executable, 'train.py', '--flagfile=configs/original.flags', '--data_dir='
      + data_dir, '--train_dir=' + os.path.join(work, 'original_preset')
  ] + extra)
  original_sec = _process_seconds([
      sys.executable,
      os.path.join(BENCH_DIR, 'original_runner.py'), '--script='
      + os.path.abspath(original_script), '--data_dir=' + data_dir, '--work_dir='
      + os.path.join(work, 'original_script')
  ] + (['--steps=30'] if smoke else []))
  return {'train_py_sec': train_sec, 'original_sec': original_sec}


def end_to_end(repo, data_dir, work, smoke):
  """What `scripts/reproduce.sh --presets upstream --seeds 0` does, run in
  checkout `repo`: train the upstream preset (seed 0), then the k=1000 NLL of
  validation and test with evaluate.py. Returns its wall seconds and the test
  figures (-ELBO, NLL). The commands are spelled out instead of calling the
  checkout's reproduce.sh, whose --seeds meant a count before it listed
  seeds, so that both checkouts do the same work."""
  train_dir = os.path.join(work, 'end_to_end_%d' % len(os.listdir(work)))
  extra = _SMOKE_TRAIN_FLAGS if smoke else []
  iw = ['--iw_samples=5'] if smoke else ['--iw_samples=1000']
  start = time.perf_counter()
  _process_seconds(
      [
          sys.executable, 'train.py', '--flagfile=configs/upstream.flags', '--data_dir=' + data_dir,
          '--train_dir=' + train_dir, '--seed=0'
      ] + extra,
      cwd=repo)
  for split in ('validation', 'test'):
    _process_seconds(
        [
            sys.executable, 'evaluate.py', '--data_dir=' + data_dir, '--train_dir=' + train_dir,
            '--split=' + split, '--output=' + os.path.join(train_dir, split + '.json')
        ] + iw,
        cwd=repo)
  seconds = time.perf_counter() - start
  test = files.read_json(os.path.join(train_dir, 'test.json'))
  return {'seconds': seconds, 'test_neg_elbo': test['neg_elbo'], 'test_iw_nll': test['iw_nll']}


# The IWAE preset's whole process against the JAX peer of the same network
# and batch, each run at two lengths (a fifth of an epoch's calls apart).
IWAE_PROCESS = 'train.py --flagfile=configs/iwae_vae.flags'
IWAE_JAX = 'JAX jit peer, iwae_mlp, batch 20, 596 steps per call'
IWAE_PROCESS_STEPS = (5960, 29800)
IWAE_FULL_STEPS = 9774400  # 3,280 epochs of 2,980 steps.


def iwae_preset(mnist_dir, work, rounds, smoke, iw_samples):
  """The IWAE preset: whole processes in their steady state (examples/s,
  alternating, medians), the compiled loop's step for K = 1, 5 and 50 draws
  (ms, and the full schedule's hours at that pace), and the k-sample NLL of
  its test set against the decoder's multiplies alone."""
  data_dir = os.path.join(work, 'iwae_data')
  train_py, train_dirs = preset_train_py('configs/iwae_vae.flags', mnist_dir, data_dir, work,
                                         'iwae_process')

  def jax_program(steps):
    return [
        sys.executable,
        os.path.join(BENCH_DIR, 'jax_peer.py'), '--mnist_dir=' + mnist_dir, '--network=iwae_mlp',
        '--batch_size=20', '--steps_per_call=596',
        '--steps=%d' % steps
    ]

  commands = {IWAE_PROCESS: train_py}
  if jax_peer:
    commands[IWAE_JAX] = jax_program
  rates, samples = steady_process_rates(commands, (596,) if smoke else IWAE_PROCESS_STEPS, rounds,
                                        20)
  network = architectures.network('iwae_mlp', 200, 50)
  step_ms = {
      iw: 1000.0 / compiled_loop_steps_per_sec(network, data_dir, iw, smoke)
      for iw in ((1, 5) if smoke else (1, 5, 50))
  }
  checkpoint = checkpoints.readable(train_dirs[-1])
  test_images = input_pipeline.read_split_images(records.split_path(data_dir, 'test'), 'dynamic')
  seconds, value = nll_seconds(checkpoint, test_images, iw_samples, 'float32')
  passes = len(test_images) * iw_samples
  floor = decoder_multiply_floor_sec(network, passes, min(passes, 1000000), tf.float32)
  return {
      'process_examples_per_sec': rates,
      'process_samples': samples,
      'step_ms': {
          str(iw): ms for iw, ms in step_ms.items()
      },
      'full_schedule_hours': {
          str(iw): ms * IWAE_FULL_STEPS / 3.6e6 for iw, ms in step_ms.items()
      },
      'nll': {
          'seconds': seconds,
          'iw_nll': value,
          'floor_seconds': floor,
          'passes': passes,
          'iw_samples': iw_samples
      }
  }


def compiled_loop_steps_per_sec(network, data_dir, iw_samples, smoke, steps_per_call=596):
  """Steps/s of fast_step.compiled_training_loop at the IWAE preset's batch
  (20), optimizer and binarization, K = iw_samples draws per image, on the
  training split kept in memory as train.py keeps it: median of 3 calls."""
  pixels = input_pipeline.read_split_pixels(records.split_path(data_dir, 'train'), 'dynamic')
  calls = 1 if smoke else 3
  with tf.Graph().as_default():
    tf.set_random_seed(0)
    data = tf.Variable(tf.zeros(pixels.shape, tf.uint8), trainable=False)
    indices = tf.random.uniform([steps_per_call, 20], 0, len(pixels), tf.int64)
    optimizer = training.make_optimizer(
        training.OptimizerSettings('adam', 1e-3, adam_beta1=0.99, adam_epsilon=5e-6))
    loop = fast_step.compiled_training_loop(
        indices, network, optimizer, iw_samples=iw_samples, pixels=data.value(), binarize='dynamic')
    with tf.Session() as session:
      session.run(tf.global_variables_initializer())
      session.run(data.assign(pixels))
      session.run(loop.train_op, {loop.steps_to_run: steps_per_call})  # Compiles.
      rates = []
      for _ in range(calls):
        start = time.perf_counter()
        session.run(loop.train_op, {loop.steps_to_run: steps_per_call})
        rates.append(steps_per_call / (time.perf_counter() - start))
  return float(np.median(rates))


# The CVAE tutorial's preset as a whole process against the tutorial's own
# program, each at two lengths (in steps of 32 images).
CVAE_PROCESS = 'train.py --flagfile=configs/cvae_tutorial.flags'
CVAE_PROGRAM = "the tutorial's program (Keras layers, tf.function)"
CVAE_PROCESS_STEPS = (300, 1500)


def cvae_tutorial(mnist_dir, work, rounds, smoke):
  """The convolutional preset: whole processes in their steady state
  (examples/s, alternating, medians), the step's FLOPs and the share of the
  convolutions' own throughput the training reaches."""
  data_dir = os.path.join(work, 'cvae_data')
  train_py, _ = preset_train_py('configs/cvae_tutorial.flags', mnist_dir, data_dir, work, 'cvae')

  def tutorial_program(steps):
    return [
        sys.executable,
        os.path.join(BENCH_DIR, 'cvae_tutorial_program.py'), '--mnist_dir=' + mnist_dir,
        '--steps=%d' % steps
    ]

  rates, samples = steady_process_rates({
      CVAE_PROCESS: train_py,
      CVAE_PROGRAM: tutorial_program
  }, (20,) if smoke else CVAE_PROCESS_STEPS, rounds, 32)
  network = architectures.network('cvae_tutorial', latent_dim=2)
  flops = architectures.training_flops_per_example(network)
  return {
      'process_examples_per_sec': rates,
      'process_samples': samples,
      'training_flops_per_example': flops,
      'training_gflops': rates[CVAE_PROCESS] * flops / 1e9,
      'convolution_gflops': convolution_ceiling_gflops(network, 32, 20 if smoke else 200)
  }


def convolution_ceiling_gflops(network, batch_size, steps):
  """GFLOP/s of the network's convolutions alone, forward and both backward
  products of each (TensorFlow's kernels, as the training step runs them)."""
  graph = tf.Graph()
  flops = 0
  with graph.as_default():
    products = []
    for layer in architectures.parameter_layers(network):
      if isinstance(layer.layer, architectures.Dense):
        continue
      conv = layer.layer
      inputs = tf.Variable(tf.random.normal([batch_size] + list(layer.input_shape)))
      weights = tf.Variable(tf.random.normal(list(layer.weights_shape)) * 0.1)
      strides = [1, conv.stride, conv.stride, 1]
      if conv.transpose:
        side = architectures._conv_output_side(layer.input_shape[0], conv)
        outputs = tf.nn.conv2d_transpose(inputs, weights, [batch_size, side, side, conv.filters],
                                         strides, conv.padding)
        positions = layer.input_shape[0] * layer.input_shape[1]
      else:
        outputs = tf.nn.conv2d(inputs, weights, strides, conv.padding)
        positions = int(outputs.shape[1]) * int(outputs.shape[2])
      flops += 3 * 2 * batch_size * positions * int(np.prod(layer.weights_shape))
      products += [outputs] + tf.gradients(tf.reduce_sum(outputs), [inputs, weights])
    step = tf.add_n([tf.reduce_sum(product) for product in products])
    init = tf.global_variables_initializer()
  with tf.Session(graph=graph) as session:
    session.run(init)
    for _ in range(5):
      session.run(step)
    start = time.perf_counter()
    for _ in range(steps):
      session.run(step)
    return flops * steps / (time.perf_counter() - start) / 1e9


def _train_images(path):
  batches = [
      images for images in tf.data.TFRecordDataset(path).batch(10000).map(
          lambda records: input_pipeline.parse_batch(records)[0])
  ]
  return np.concatenate([b.numpy() for b in batches])


def _peak_rss_of_training(data_dir, validation_size, work_dir, steps):
  """Peak RSS (MiB) of a real train.py process with default settings.

  A small Python process starts train.py and reports its children's peak:
  forked straight from this big process, the child's peak would count this
  process's pages from before its exec (1.6 GB instead of 0.8).
  """
  command = [
      sys.executable,
      os.path.join(REPO_ROOT, 'train.py'), '--data_dir', data_dir, '--train_dir', work_dir,
      '--validation_size',
      str(validation_size), '--max_steps',
      str(steps), '--image_every_n_steps',
      str(max(steps // 2, 1)), '--eval_every_n_steps',
      str(max(steps // 2, 1))
  ]
  reporter = ('import resource, subprocess, sys; '
              'subprocess.run(sys.argv[1:], check=True, capture_output=True); '
              'print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)')
  output = subprocess.run(
      [sys.executable, '-c', reporter] + command,
      check=True,
      capture_output=True,
      text=True,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')).stdout
  return int(output.split()[-1]) / 1024.0


def _cpu():
  model_name, cpu_flags = platform.processor(), []
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          model_name = line.split(':', 1)[1].strip()
        if line.startswith('flags'):
          cpu_flags = sorted(
              flag for flag in line.split() if flag.startswith(('avx', 'amx', 'fma')))
  except OSError:
    pass
  return model_name, cpu_flags


def has_native_bfloat16(cpu_flags):
  return bool({'avx512_bf16', 'amx_bf16'} & set(cpu_flags))


def core_benchmarks(mnist_dir, data_dir, validation_size, splits, work, rounds, steps, batch_size,
                    smoke, iw_samples, process_rounds):
  """Measurements 1-5 and 8 of the default MLP; returns their results."""
  train_images = _train_images(splits['train'][0])
  network = _train_defaults()['network']

  contenders = {
      TRAIN:
          ProjectLoop(splits, os.path.join(work, 'adam'), 'adam', batch_size, steps),
      'train.py loop, TFRecords, sgd':
          ProjectLoop(splits, os.path.join(work, 'sgd'), 'sgd', batch_size, steps),
      'train.py loop, TFRecords, adam, bfloat16':
          ProjectLoop(
              splits,
              os.path.join(work, 'bf16'),
              'adam',
              batch_size,
              steps,
              matmul_precision='bfloat16'),
      'train.py loop, memory, adam':
          ProjectLoop(
              splits,
              os.path.join(work, 'memory'),
              'adam',
              batch_size,
              steps,
              memory_images=train_images),
      'input pipeline alone':
          PipelineAlone(splits['train'][0], splits['train'][1], batch_size, steps),
      **{
          FAST_PEER % n: FastPeer(fast_tf2_peer, train_images, batch_size, steps, n)
          for n in STEPS_PER_CALL
      },
      **({
          JAX_PEER % n: FastPeer(jax_peer, train_images, batch_size, steps, n)
          for n in STEPS_PER_CALL
      } if jax_peer else {}),
      'TF2 peer (tf.function), adam':
          Tf2Peer(train_images, batch_size, steps, 'adam'),
      'TF2 peer (tf.function), sgd':
          Tf2Peer(train_images, batch_size, steps, 'sgd'),
      'Keras 3 fit, adam':
          KerasPeer(train_images, batch_size, steps),
      'matmul ceiling':
          MatmulCeiling(network, batch_size, steps),
      'matmul ceiling, bfloat16':
          MatmulCeiling(network, batch_size, steps, tf.bfloat16),
  }
  samples = {name: [] for name in contenders}
  for round_index in range(rounds):
    for name, contender in contenders.items():
      samples[name].append(contender.measure())
    print('round %d/%d done' % (round_index + 1, rounds), file=sys.stderr)
  medians = {name: float(np.median(values)) for name, values in samples.items()}
  project = contenders[TRAIN]
  evaluation_rate = project.evaluation_examples_per_sec(
      input_pipeline.read_split_images(splits['test'][0]))
  ceiling = contenders['matmul ceiling']
  for contender in contenders.values():
    if isinstance(contender, ProjectLoop):
      contender.close()

  # The NLL of the test set and its floor: test images x k decoder passes.
  test_images = input_pipeline.read_split_images(splits['test'][0])
  passes = len(test_images) * iw_samples
  checkpoint = checkpoints.readable(project.work_dir)
  nll = {}
  for precision in model.MATMUL_DTYPES:
    seconds, value = nll_seconds(checkpoint, test_images, iw_samples, precision)
    floor = decoder_multiply_floor_sec(network, passes, min(passes, 1000000),
                                       model.MATMUL_DTYPES[precision])
    nll[precision] = {'seconds': seconds, 'iw_nll': value, 'floor_seconds': floor}
    print('NLL %s done' % precision, file=sys.stderr)
  # Where the float32 NLL's time goes beyond its floor.
  nll['float32']['parts_seconds'] = nll_parts_sec(network, passes, min(passes, 1000000), iw_samples)

  process_rates, process_samples = whole_processes(data_dir, mnist_dir, work, process_rounds,
                                                   batch_size, smoke)
  print('whole processes done', file=sys.stderr)
  return {
      'examples_per_sec':
          medians,
      'process_examples_per_sec':
          process_rates,
      'process_samples':
          process_samples,
      'samples':
          samples,
      'matmul_gflops':
          medians['matmul ceiling'] * ceiling.flops_per_step / batch_size / 1e9,
      'nll':
          nll,
      'nll_passes':
          passes,
      'iw_samples':
          iw_samples,
      'onednn_kernels':
          onednn_matmul_kernels(),
      'evaluation_examples_per_sec':
          evaluation_rate,
      'train_peak_rss_mib':
          _peak_rss_of_training(
              data_dir, validation_size, os.path.join(work, 'rss'), steps=5 if smoke else 300),
  }


def run_benchmarks(*,
                   mnist_dir,
                   rounds,
                   steps,
                   batch_size,
                   smoke,
                   iw_samples,
                   process_rounds=3,
                   original_script=None,
                   run_end_to_end=False,
                   baseline_repo=None,
                   sections=SECTIONS):
  """Runs the measurements of `sections` (and the optional ones asked for);
  returns a dict of results."""
  work = tempfile.mkdtemp(prefix='vae_bench_')
  if smoke or not os.path.exists(os.path.join(mnist_dir, idx.TRAIN_IMAGES + '.gz')):
    mnist_dir = _synthetic_idx_dir(os.path.join(work, 'idx'))
    validation_size = 100
  else:
    validation_size = 5000
  data_dir = os.path.join(work, 'data')
  start = time.perf_counter()
  info = convert_to_records.convert(mnist_dir, data_dir, validation_size=validation_size)
  conversion_sec = time.perf_counter() - start
  num_records = sum(info['num_examples'].values())
  splits = {
      split: (records.split_path(data_dir, split), info['num_examples'][split])
      for split in records.SPLITS
  }
  results = {
      'conversion_sec': conversion_sec,
      'conversion_records_per_sec': num_records / conversion_sec,
  }
  if 'core' in sections:
    results.update(
        core_benchmarks(mnist_dir, data_dir, validation_size, splits, work, rounds, steps,
                        batch_size, smoke, iw_samples, process_rounds))
  if 'iwae' in sections:
    results['iwae'] = iwae_preset(mnist_dir, work, max(process_rounds, 1), smoke, iw_samples)
    print('IWAE preset done', file=sys.stderr)
  if 'cvae' in sections:
    results['cvae_tutorial'] = cvae_tutorial(mnist_dir, work, max(process_rounds, 1), smoke)
    print('CVAE tutorial preset done', file=sys.stderr)
  if original_script:
    results['original_script'] = original_script_vs_train_py(original_script, data_dir, work, smoke)
    print('original script done', file=sys.stderr)
  if run_end_to_end:
    results['end_to_end'] = {'here': end_to_end(REPO_ROOT, data_dir, work, smoke)}
    if baseline_repo:
      results['end_to_end']['baseline'] = end_to_end(
          os.path.abspath(baseline_repo), data_dir, work, smoke)
    print('end to end done', file=sys.stderr)
  model_name, cpu_flags = _cpu()
  results.update(
      machine={
          'cpu': model_name,
          'cpu_count': os.cpu_count(),
          'cpu_flags': cpu_flags,
          'onednn': os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'default'),
          'tensorflow': tf.version.VERSION,
          'python': platform.python_version()
      },
      settings={
          'rounds': rounds,
          'steps': steps,
          'batch_size': batch_size,
          'process_rounds': process_rounds,
          'smoke': smoke,
          'num_train': splits['train'][1],
          'baseline_repo': baseline_repo
      })
  return results


def targets(results):
  """[(label, value, met)] of every performance target measurable here;
  met is None where the target does not apply to this CPU."""
  checks = []
  if 'examples_per_sec' in results:
    rate = results['examples_per_sec']
    train_rate = rate[TRAIN]
    best_peer = max((name for name in PEERS if name in rate), key=lambda name: rate[name])
    nll = results['nll']
    native_bf16 = has_native_bfloat16(results['machine']['cpu_flags'])
    checks += [
        ('training loop (adam, TFRecords) / best peer (%s) >= 1' % best_peer,
         train_rate / rate[best_peer], train_rate / rate[best_peer] >= 1),
        ('training / matmul ceiling >= 0.65', train_rate / rate['matmul ceiling'],
         train_rate / rate['matmul ceiling'] >= 0.65),
        ('k=%d NLL seconds / its multiply floor <= 1.25' % results['iw_samples'],
         nll['float32']['seconds'] / nll['float32']['floor_seconds'],
         nll['float32']['seconds'] / nll['float32']['floor_seconds'] <= 1.25),
        ('bfloat16 training / float32 training >= 1.5',
         rate['train.py loop, TFRecords, adam, bfloat16'] / train_rate,
         rate['train.py loop, TFRecords, adam, bfloat16']
         / train_rate >= 1.5 if native_bf16 else None),
        ('bfloat16 NLL speed / float32 NLL speed >= 2',
         nll['float32']['seconds'] / nll['bfloat16']['seconds'],
         nll['float32']['seconds'] / nll['bfloat16']['seconds'] >= 2 if native_bf16 else None),
        ('TFRecord loop / memory loop >= 0.97', train_rate / rate['train.py loop, memory, adam'],
         train_rate / rate['train.py loop, memory, adam'] >= 0.97),
        ('pipeline alone / training >= 10', rate['input pipeline alone'] / train_rate,
         rate['input pipeline alone'] / train_rate >= 10),
        ('conversion seconds < 2', results['conversion_sec'], results['conversion_sec'] < 2),
        ('peak RSS MiB < 1536', results['train_peak_rss_mib'], results['train_peak_rss_mib']
         < 1536),
    ]
  processes = results.get('process_examples_per_sec')
  if processes:
    best_process = max((name for name in processes if name != TRAIN_PROCESS),
                       key=lambda name: processes[name])
    ratio = processes[TRAIN_PROCESS] / processes[best_process]
    checks.insert(1, ('%s, whole process / best peer process (%s) >= 1' %
                      (TRAIN_PROCESS, best_process), ratio, ratio >= 1))
  iwae = results.get('iwae')
  if iwae:
    rates = iwae['process_examples_per_sec']
    if IWAE_JAX in rates:
      ratio = rates[IWAE_PROCESS] / rates[IWAE_JAX]
      checks.append(('IWAE preset, whole process / JAX peer (batch 20) >= 1', ratio, ratio >= 1))
    ratio = iwae['nll']['seconds'] / iwae['nll']['floor_seconds']
    checks.append(('IWAE k=%d NLL seconds / its multiply floor <= 1.25' % iwae['nll']['iw_samples'],
                   ratio, ratio <= 1.25))
  cvae = results.get('cvae_tutorial')
  if cvae:
    rates = cvae['process_examples_per_sec']
    ratio = rates[CVAE_PROCESS] / rates[CVAE_PROGRAM]
    checks.append(("CVAE tutorial preset, whole process / the tutorial's program >= 1", ratio, ratio
                   >= 1))
  if 'original_script' in results:
    times = results['original_script']
    ratio = times['train_py_sec'] / times['original_sec']
    checks.append(('train.py original preset / original script < 1', ratio, ratio < 1))
  runs = results.get('end_to_end', {})
  if 'baseline' in runs:
    ratio = runs['here']['seconds'] / runs['baseline']['seconds']
    checks.append(('reproduce upstream seed 0 / baseline < 0.6', ratio, ratio < 0.6))
  return checks


def core_report_lines(results):
  """The report of measurements 1-4."""
  rate = results['examples_per_sec']
  train_rate = rate[TRAIN]
  lines = ['| measurement | examples/s | vs. %s |' % TRAIN, '|---|---|---|']
  for name, value in rate.items():
    lines.append('| %s | %.0f | %.2fx |' % (name, value, value / train_rate))
  processes = results.get('process_examples_per_sec')
  if processes:
    lines += [
        '',
        '| whole process, steady state (%d minus %d steps) | examples/s | '
        'vs. %s |' % (PROCESS_STEPS[1], PROCESS_STEPS[0], TRAIN_PROCESS), '|---|---|---|'
    ]
    for name, value in processes.items():
      lines.append('| %s | %.0f | %.2fx |' % (name, value, value / processes[TRAIN_PROCESS]))
  if not jax_peer:
    lines += ['', 'JAX peer: left out (jax does not import; pip install -e ".[bench]").']
  lines += [
      '',
      '| k=%d NLL of the test set (%d decoder passes) | seconds | '
      'its multiply floor | ratio | mean NLL |' % (results['iw_samples'], results['nll_passes']),
      '|---|---|---|---|---|'
  ]
  for precision, nll in results['nll'].items():
    lines.append('| %s | %.1f | %.1f s | %.2fx | %.3f |' %
                 (precision, nll['seconds'], nll['floor_seconds'],
                  nll['seconds'] / nll['floor_seconds'], nll['iw_nll']))
  return lines


def format_report(results):
  ran_core = 'examples_per_sec' in results  # --sections included core.
  lines = []
  if ran_core:
    lines += core_report_lines(results)
  iwae = results.get('iwae')
  if iwae:
    rates = iwae['process_examples_per_sec']
    lines += [
        '',
        '| IWAE preset (batch 20), whole process, steady state (%d minus %d steps) '
        '| examples/s | vs. train.py |' % IWAE_PROCESS_STEPS[::-1], '|---|---|---|'
    ]
    for name, value in rates.items():
      lines.append('| %s | %.0f | %.2fx |' % (name, value, value / rates[IWAE_PROCESS]))
    lines += [
        '',
        'IWAE preset, a step of the compiled loop: %s; the full schedule (%d '
        'steps) at that pace: %s' %
        (', '.join('K=%s %.2f ms' % item for item in iwae['step_ms'].items()), IWAE_FULL_STEPS,
         ', '.join('K=%s %.1f h' % item for item in iwae['full_schedule_hours'].items())),
        'IWAE preset, k=%d NLL of the test set: %.1f s, its multiply floor %.1f s '
        '(%.2fx); mean NLL %.3f' %
        (iwae['nll']['iw_samples'], iwae['nll']['seconds'], iwae['nll']['floor_seconds'],
         iwae['nll']['seconds'] / iwae['nll']['floor_seconds'], iwae['nll']['iw_nll'])
    ]
  cvae = results.get('cvae_tutorial')
  if cvae:
    rates = cvae['process_examples_per_sec']
    lines += [
        '',
        '| CVAE tutorial preset (batch 32), whole process, steady state (%d minus %d '
        'steps) | examples/s | vs. train.py |' % CVAE_PROCESS_STEPS[::-1], '|---|---|---|'
    ]
    for name, value in rates.items():
      lines.append('| %s | %.0f | %.2fx |' % (name, value, value / rates[CVAE_PROCESS]))
    lines += [
        '',
        'CVAE tutorial preset: %.1f MFLOP a training example; train.py reaches %.1f '
        'GFLOP/s, %.0f%% of its convolutions\' own %.1f GFLOP/s' %
        (cvae['training_flops_per_example'] / 1e6, cvae['training_gflops'],
         100 * cvae['training_gflops'] / cvae['convolution_gflops'], cvae['convolution_gflops'])
    ]
  if ran_core:
    parts = results['nll']['float32']['parts_seconds']
    lines += [
        '',
        'float32 NLL, its parts timed alone: decoder with biases and '
        'activations %.1f s (its bare multiplies %.1f s), likelihood of '
        'every pixel %.1f s, draws of z %.1f s; together %.1f s of the %.1f s '
        'measured' %
        (parts['decoder'], results['nll']['float32']['floor_seconds'], parts['likelihood'],
         parts['draws'], sum(parts.values()), results['nll']['float32']['seconds'])
    ]
  machine = results['machine']
  if ran_core:
    lines += [
        '',
        'matmul ceiling: %.0f GFLOP/s' % results['matmul_gflops'],
        'oneDNN matmul kernels: %s' %
        ('; '.join('%s: %s' % (k, ', '.join(v))
                   for k, v in sorted(results['onednn_kernels'].items()))
         or 'none (oneDNN is off)'),
        'evaluation (negative ELBO, test set): %.0f examples/s'
        % results['evaluation_examples_per_sec'],
        'peak RSS of train.py: %.0f MiB' % results['train_peak_rss_mib'],
    ]
  lines.append('MNIST -> TFRecords: %.2f s (%.0f records/s)' %
               (results['conversion_sec'], results['conversion_records_per_sec']))
  if 'original_script' in results:
    lines.append(
        'original preset, whole process: train.py %.0f s, original '
        'script %.0f s' %
        (results['original_script']['train_py_sec'], results['original_script']['original_sec']))
  for where, run in results.get('end_to_end', {}).items():
    lines.append('reproduce upstream seed 0 (train + k=1000 validation and '
                 'test), %s: %.0f s; test -ELBO %.2f, NLL %.2f' %
                 (where, run['seconds'], run['test_neg_elbo'], run['test_iw_nll']))
  lines += [
      'CPU: %s, %d cores, %s; oneDNN opts %s; TensorFlow %s' %
      (machine['cpu'], machine['cpu_count'], ' '.join(
          machine['cpu_flags']), machine['onednn'], machine['tensorflow']),
      '',
      'targets (ratios of this run):',
  ]
  for label, value, met in targets(results):
    verdict = {True: 'met', False: 'NOT met', None: 'n/a (no native bfloat16)'}[met]
    lines.append('  %-62s %7.2f  %s' % (label, value, verdict))
  return '\n'.join(lines)


def main(argv):
  del argv  # Unused.
  tf.get_logger().setLevel('ERROR')  # Checkpoint chatter of the contenders.
  rounds, steps = (1, 3) if FLAGS.smoke else (FLAGS.rounds, FLAGS.steps)
  if FLAGS.baseline_repo and not FLAGS.end_to_end:
    raise app.UsageError('--baseline_repo is timed only with --end_to_end')
  for path, flag in ((FLAGS.original_script, 'original_script'), (FLAGS.baseline_repo,
                                                                  'baseline_repo')):
    if path and not os.path.exists(path):
      raise app.UsageError('--%s: %s does not exist' % (flag, path))
  results = run_benchmarks(
      mnist_dir=FLAGS.mnist_dir,
      rounds=rounds,
      steps=steps,
      process_rounds=1 if FLAGS.smoke else FLAGS.process_rounds,
      batch_size=FLAGS.batch_size,
      smoke=FLAGS.smoke,
      iw_samples=5 if FLAGS.smoke else FLAGS.iw_samples,
      original_script=FLAGS.original_script,
      run_end_to_end=FLAGS.end_to_end,
      baseline_repo=FLAGS.baseline_repo,
      sections=FLAGS.sections)
  print(format_report(results))
  if FLAGS.json:
    files.write_json(FLAGS.json, results)


if __name__ == '__main__':
  app.run(main)
