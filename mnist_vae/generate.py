"""What people do with a trained VAE: samples, interpolations, latent
traversals, reconstructions of their own digits, as PNGs (and GIFs).

  python generate.py --train_dir runs/upstream --mode samples --output_dir out
  python generate.py --export_dir exports/upstream --mode interpolate --output_dir out
  python generate.py --train_dir runs/upstream --mode reconstruct --inputs my_digit.jpg

Modes (each works with no other flag):
  samples      a grid of decoded prior draws z ~ N(0, temperature^2 I)
               (samples.png); with --sample_from aggregate, draws from the
               Gaussian fitted to the training set's posteriors instead, the
               aggregate posterior q(z) that the decoder was trained on
               (samples_aggregate.png; the fit is made once, from --data_dir's
               training split, and saved beside the checkpoint)
  interpolate  between two inputs (test-set indices or image files; default
               test images 0 and 1), linearly and spherically in latent
               space: one row each, and an animated GIF of each
  traverse     each latent dimension (or --dims) swept over [-3, 3] around
               an input's posterior mean, one row per dimension, the
               dimensions ordered by their KL for that input (most used first)
  reconstruct  each input (default: test image 0) as given, as preprocessed
               the way MNIST was made, and reconstructed

The model comes from a checkpoint (--train_dir, --checkpoint) or a SavedModel
of export.py (--export_dir).
"""

from mnist_vae import quiet_start

quiet_start.import_tensorflow()  # Before anything else imports TensorFlow.

import collections
import io
import os

from absl import flags
from absl import logging
import numpy as np
from PIL import Image
from PIL import UnidentifiedImageError
import tensorflow.compat.v1 as tf

from mnist_vae import checkpoints
from mnist_vae import cli
from mnist_vae import evaluation
from mnist_vae import files
from mnist_vae import images
from mnist_vae import input_pipeline
from mnist_vae import run_dir
from mnist_vae import settings
from mnist_vae import trained_model
from mnist_vae.data_prep import records

FLAGS = flags.FLAGS
MODES = ('samples', 'interpolate', 'traverse', 'reconstruct')
SAMPLE_SOURCES = trained_model.SAMPLE_SOURCES
TRAVERSE_RANGE = 3.0
# MNIST's digits: the ink's bounding box scaled into 20x20, centred by centre
# of mass in 28x28 (LeCun et al., the MNIST page).
DIGIT_BOX = 20
# Bounds on what one run makes and reads, stated in the flags' help: a grid of
# MAX_SAMPLES digits is a 280 x 28,000 PNG; an input image is refused above
# MAX_INPUT_PIXELS (a 6,000 x 6,000 photo) or MAX_INPUT_BYTES before it is
# decoded, where Pillow would need gigabytes.
MAX_SAMPLES = 10000
MAX_STEPS = 1000
MAX_INPUT_PIXELS = 6000 * 6000
MAX_INPUT_BYTES = 64 * 2**20


class GenerateError(RuntimeError):
  """An input or the model cannot be used; the message says which and why."""


# What to make, of which model, where: generate.py's flags, these their
# defaults.
GenerateSettings = collections.namedtuple(
    'GenerateSettings', [
        'mode', 'train_dir', 'checkpoint', 'export_dir', 'output_dir', 'data_dir', 'inputs', 'num',
        'seed', 'temperature', 'sample_from', 'steps', 'dims', 'scale'
    ],
    defaults=('samples', None, None, None, 'generated', None, None, 100, 0, 1.0, 'prior', 10, None,
              1))
MAX_SCALE = 16


def _default(name):
  return settings.default(GenerateSettings, name)


def define_flags(flag_values=flags.FLAGS):
  flags.DEFINE_enum(
      'mode', _default('mode'), MODES, flag_values=flag_values, help='What to make; see --help.')
  flags.DEFINE_string(
      'train_dir',
      _default('train_dir'),
      flag_values=flag_values,
      help='A training run: its latest checkpoint is used.')
  flags.DEFINE_string(
      'checkpoint',
      _default('checkpoint'),
      flag_values=flag_values,
      help='A checkpoint path (model.ckpt-N) instead of the '
      'latest in --train_dir.')
  flags.DEFINE_string(
      'export_dir',
      _default('export_dir'),
      flag_values=flag_values,
      help='A SavedModel written by export.py, instead of a '
      'checkpoint.')
  flags.DEFINE_string(
      'output_dir',
      _default('output_dir'),
      flag_values=flag_values,
      help='Where the PNGs (and GIFs) go.')
  flags.DEFINE_string(
      'data_dir',
      _default('data_dir'),
      flag_values=flag_values,
      help='TFRecords whose test split test-set indices '
      'refer to. Default: those the run of --train_dir was '
      'trained on (its config.json), else data/mnist.')
  flags.DEFINE_list(
      'inputs',
      _default('inputs'),
      flag_values=flag_values,
      help='Comma-separated test-set indices or image files '
      '(PNG, JPEG; at most %d pixels and %d MB each). Default: '
      '0,1 for interpolate, 0 otherwise.' % (MAX_INPUT_PIXELS, MAX_INPUT_BYTES // 2**20))
  flags.DEFINE_integer(
      'num',
      _default('num'),
      flag_values=flag_values,
      lower_bound=1,
      upper_bound=MAX_SAMPLES,
      help='samples: how many, 10 to a row (at most %d).' % MAX_SAMPLES)
  flags.DEFINE_integer(
      'seed',
      _default('seed'),
      flag_values=flag_values,
      lower_bound=0,
      upper_bound=cli.MAX_SEED,
      help='samples: seed of the prior draws.')
  flags.DEFINE_float(
      'temperature',
      _default('temperature'),
      flag_values=flag_values,
      lower_bound=0.0,
      upper_bound=100.0,
      help='samples: scale of the draws about their mean '
      '(below 1: cleaner, less varied digits).')
  flags.DEFINE_enum(
      'sample_from',
      _default('sample_from'),
      SAMPLE_SOURCES,
      flag_values=flag_values,
      help='samples: prior draws z from N(0, I); aggregate from '
      'the Gaussian fitted to the posteriors of --data_dir\'s '
      'training split (saved beside the checkpoint; an export '
      'needs its sample_aggregate signature).')
  flags.DEFINE_integer(
      'steps',
      _default('steps'),
      flag_values=flag_values,
      lower_bound=2,
      upper_bound=cli.MAX_STEPS,
      help='interpolate: frames from the first input to the '
      'second, both included; traverse: values per row (at '
      'most %d).' % MAX_STEPS)
  flags.DEFINE_list(
      'dims',
      _default('dims'),
      flag_values=flag_values,
      help='traverse: latent dimensions to sweep (default: all).')
  flags.DEFINE_integer(
      'scale',
      _default('scale'),
      flag_values=flag_values,
      lower_bound=1,
      upper_bound=MAX_SCALE,
      help='Enlarge every PNG this many times, each pixel a '
      'square of scale x scale (nearest neighbour; at most %d).' % MAX_SCALE)


def mnist_style(image):
  """A photo or scan of a digit -> float32 [784] in [0, 1], prepared as MNIST
  was: grey, white ink on black (inverted when the background is light),
  cropped to the ink, scaled into 20x20 keeping the aspect ratio, centred by
  centre of mass in 28x28."""
  grey = np.asarray(image.convert('L'), np.float32) / 255.0
  border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
  if np.median(border) > 0.5:
    grey, border = 1.0 - grey, 1.0 - border
  # The paper's grey becomes black, the darkest ink white.
  background = float(np.median(border))
  grey = np.clip((grey - background) / max(float(grey.max()) - background, 1e-6), 0.0, 1.0)
  ink = np.argwhere(grey > 0.1)
  if not len(ink):
    raise ValueError('no digit found (the image is blank)')
  (top, left), (bottom, right) = ink.min(axis=0), ink.max(axis=0) + 1
  digit = grey[top:bottom, left:right]
  scale = DIGIT_BOX / max(digit.shape)
  size = (max(1, round(digit.shape[1] * scale)), max(1, round(digit.shape[0] * scale)))
  digit = np.asarray(Image.fromarray(digit).resize(size, Image.LANCZOS), np.float32)
  digit = np.clip(digit, 0.0, 1.0)
  rows, cols = np.indices(digit.shape)
  total = max(float(digit.sum()), 1e-6)
  centre = ((rows * digit).sum() / total, (cols * digit).sum() / total)
  side = records.IMAGE_SIDE
  top = int(round(side / 2 - centre[0]))
  left = int(round(side / 2 - centre[1]))
  top = min(max(top, 0), side - digit.shape[0])
  left = min(max(left, 0), side - digit.shape[1])
  canvas = np.zeros((side, side), np.float32)
  canvas[top:top + digit.shape[0], left:left + digit.shape[1]] = digit
  return canvas.reshape(records.IMAGE_PIXELS)


def read_inputs(specs, data_dir):
  """Each spec (a test-set index or an image file) -> (as given: float32
  [784] or None for a test image, preprocessed float32 [784])."""
  test_images = None
  result = []
  for spec in specs:
    if spec.strip().isdigit():
      if test_images is None:
        path = records.split_path(data_dir, 'test')
        input_pipeline.inspect_records(path)
        test_images = input_pipeline.read_split_images(path)
      index = int(spec)
      if index >= len(test_images):
        raise GenerateError('Test-set index %d is out of range: %s holds %d '
                            'images' %
                            (index, records.split_path(data_dir, 'test'), len(test_images)))
      result.append((None, test_images[index]))
      continue
    image = _open_image(spec)
    try:
      prepared = mnist_style(image)
    except ValueError as e:
      raise GenerateError('%s: %s' % (spec, e)) from e
    as_given = np.asarray(
        image.convert('L').resize((records.IMAGE_SIDE, records.IMAGE_SIDE)), np.float32) / 255.0
    result.append((as_given.reshape(records.IMAGE_PIXELS), prepared))
  return result


def _open_image(path):
  """The image file at `path`, decoded; GenerateError when it is missing,
  not an image, or too large to decode (its size is read from the header
  first)."""
  try:
    size = tf.io.gfile.stat(path).length
  except tf.errors.NotFoundError as e:
    raise GenerateError('%s: no such file (an input is a test-set index or an '
                        'image file)' % path) from e
  if size > MAX_INPUT_BYTES:
    raise GenerateError('%s is %d MB; --inputs takes images of at most %d MB' %
                        (path, size // 2**20, MAX_INPUT_BYTES // 2**20))
  try:
    with tf.io.gfile.GFile(path, 'rb') as f:
      image = Image.open(io.BytesIO(f.read()))  # Reads the header only.
      width, height = image.size
      if width * height > MAX_INPUT_PIXELS:
        raise GenerateError('%s is %d x %d pixels; --inputs takes images of at most %d pixels '
                            '(a digit needs 28 x 28): scale it down first.' %
                            (path, width, height, MAX_INPUT_PIXELS))
      image.load()
  except Image.DecompressionBombError as e:  # Pillow's own, larger bound.
    raise GenerateError('%s: %s; --inputs takes images of at most %d pixels' %
                        (path, e, MAX_INPUT_PIXELS)) from e
  except (UnidentifiedImageError, OSError) as e:
    raise GenerateError('%s is not an image Pillow can read: %s' % (path, e)) from e
  return image


def slerp(z0, z1, fractions):
  """Spherical interpolation from z0 to z1 (float [D]): float [len(fractions), D]."""
  cosine = np.dot(z0, z1) / max(np.linalg.norm(z0) * np.linalg.norm(z1), 1e-12)
  omega = np.arccos(np.clip(cosine, -1.0, 1.0))
  if omega < 1e-6:
    return np.stack([(1 - t) * z0 + t * z1 for t in fractions])
  return np.stack([
      (np.sin((1 - t) * omega) * z0 + np.sin(t * omega) * z1) / np.sin(omega) for t in fractions
  ])


def _write_gif(path, frames):
  """frames: uint8 [n, h, w] -> an animated GIF that goes there and back."""
  pictures = [
      Image.fromarray(frame).resize((frame.shape[1] * 4, frame.shape[0] * 4), Image.NEAREST)
      for frame in frames
  ]
  pictures += pictures[-2:0:-1]
  buffer = io.BytesIO()
  pictures[0].save(
      buffer, format='GIF', save_all=True, append_images=pictures[1:], duration=120, loop=0)
  files.write(path, buffer.getvalue())


def make_samples(vae,
                 output_dir,
                 num,
                 seed,
                 temperature,
                 sample_from='prior',
                 data_dir=None,
                 scale=1):
  path = os.path.join(output_dir,
                      'samples.png' if sample_from == 'prior' else 'samples_%s.png' % sample_from)
  images.write_png(
      path,
      images.sample_grid(
          trained_model.draw_samples(vae, num, seed, temperature, sample_from, data_dir)), scale)
  return [path]


def make_interpolations(vae, output_dir, inputs, steps, scale=1):
  if len(inputs) != 2:
    raise GenerateError('--mode interpolate takes two --inputs, not %d' % len(inputs))
  z_mean, _ = vae.encode(np.stack([prepared for _, prepared in inputs]))
  fractions = np.linspace(0.0, 1.0, steps)
  paths = []
  for kind, z in (('linear', np.stack([(1 - t) * z_mean[0] + t * z_mean[1] for t in fractions])),
                  ('spherical', slerp(z_mean[0], z_mean[1], fractions))):
    frames = vae.decode(z.astype(np.float32))
    png = os.path.join(output_dir, 'interpolate_%s.png' % kind)
    gif = os.path.join(output_dir, 'interpolate_%s.gif' % kind)
    images.write_png(png, images.sample_grid(frames, columns=steps), scale)
    _write_gif(gif, images.to_uint8(frames))
    paths += [png, gif]
  return paths


def make_traversal(vae, output_dir, inputs, steps, dims, scale=1):
  if len(inputs) != 1:
    raise GenerateError('--mode traverse takes one --inputs, not %d' % len(inputs))
  z_mean, z_stddev = vae.encode(inputs[0][1][None])
  z_mean, z_stddev = z_mean[0], z_stddev[0]
  latent_dim = len(z_mean)
  kl = 0.5 * (z_mean**2 + z_stddev**2 - np.log(z_stddev**2) - 1.0)
  if dims is None:
    dims = [int(d) for d in np.argsort(-kl)]
  for d in dims:
    if not 0 <= d < latent_dim:
      raise GenerateError('--dims: %d is not a latent dimension (0 to %d)' % (d, latent_dim - 1))
  values = np.linspace(-TRAVERSE_RANGE, TRAVERSE_RANGE, steps)
  rows = []
  for d in dims:
    z = np.repeat(z_mean[None], steps, axis=0)
    z[:, d] = z_mean[d] + values
    rows.append(vae.decode(z.astype(np.float32)))
  path = os.path.join(output_dir, 'traverse.png')
  images.write_png(path, images.sample_grid(np.concatenate(rows), columns=steps), scale)
  logging.info('Rows of %s, top to bottom: dimensions %s (KL %s).', path, dims,
               ', '.join('%.2f' % kl[d] for d in dims))
  return [path]


def make_reconstructions(vae, output_dir, inputs, scale=1):
  prepared = np.stack([p for _, p in inputs])
  z_mean, _ = vae.encode(prepared)
  reconstructions = vae.decode(z_mean)
  rows = []
  for (as_given, preprocessed), reconstruction in zip(inputs, reconstructions):
    rows += [preprocessed if as_given is None else as_given, preprocessed, reconstruction]
  path = os.path.join(output_dir, 'reconstruct.png')
  images.write_png(path, images.sample_grid(np.stack(rows), columns=3), scale)
  return [path]


def load_model(train_dir=None, checkpoint=None, export_dir=None):
  """The model of an export or of a checkpoint (the latest in train_dir)."""
  if export_dir:
    return trained_model.ExportedModel(export_dir)
  if not checkpoint and not train_dir:
    raise GenerateError('Pass --train_dir, --checkpoint or --export_dir')
  return trained_model.CheckpointModel(checkpoints.readable(train_dir, checkpoint))


def generate(generate_settings, vae):
  """Writes the pictures a GenerateSettings asks for, of model `vae` (see
  load_model), into its output_dir; returns their paths."""
  mode, output_dir, scale = (generate_settings.mode, generate_settings.output_dir,
                             generate_settings.scale)
  if generate_settings.sample_from != 'prior' and mode != 'samples':
    raise GenerateError('--sample_from is for --mode samples, not %s' % mode)
  try:
    dims = [int(d) for d in generate_settings.dims] if generate_settings.dims else None
  except ValueError as e:
    raise GenerateError('--dims takes whole numbers: %s' % e) from e
  data_dir = generate_settings.data_dir or _data_dir_of(vae)
  files.make_dirs(output_dir, '--output_dir')
  if mode == 'samples':
    return make_samples(vae, output_dir, generate_settings.num, generate_settings.seed,
                        generate_settings.temperature, generate_settings.sample_from, data_dir,
                        scale)
  specs = generate_settings.inputs or (['0', '1'] if mode == 'interpolate' else ['0'])
  examples = read_inputs(specs, data_dir)
  if mode == 'interpolate':
    return make_interpolations(vae, output_dir, examples, generate_settings.steps, scale)
  if mode == 'traverse':
    return make_traversal(vae, output_dir, examples, generate_settings.steps, dims, scale)
  return make_reconstructions(vae, output_dir, examples, scale)


def _data_dir_of(vae):
  """The data a checkpoint's run was trained on (data/mnist for an export)."""
  checkpoint = getattr(vae, 'checkpoint', None)
  if checkpoint is None:
    return run_dir.DEFAULT_DATA_DIR
  return run_dir.trained_setting(os.path.dirname(checkpoint), 'data_dir', run_dir.DEFAULT_DATA_DIR)


def main():
  generate_settings = settings.fill(GenerateSettings, FLAGS)
  vae = load_model(generate_settings.train_dir, generate_settings.checkpoint,
                   generate_settings.export_dir)
  for path in generate(generate_settings, vae):
    logging.info('Wrote %s', path)
  return 0


def run():
  """Console-script entry point (vae-generate)."""
  cli.run(main, define_flags, __name__,
          (GenerateError, checkpoints.CheckpointError, input_pipeline.RecordsError,
           evaluation.EvaluationError, trained_model.ModelError, run_dir.ConfigError),
          (GenerateSettings,), {})


if __name__ == '__main__':
  run()
