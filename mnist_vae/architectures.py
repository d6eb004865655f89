"""The networks this project trains, each described once, as data.

An architecture is a function of the sizes a user may choose (the latent size
and, where the network has one, the width of its hidden layers) that returns
a `Network`: the encoder's layers, the Gaussian head, the decoder's layers and
the choices around them (the scale's parameterisation, the likelihood, the
initialisation). Everything else is derived from that description:

  model.py            the variables (their checkpoint names and shapes) and
                      the forward passes, op by op or inside one compiled step
  fast_step.py        one dropout mask per layer marked `dropout`
  variable_shapes()   what a checkpoint of the network holds
  flops_per_example() the multiply-adds of a forward pass (bench/)

Adding an architecture is one function here, one entry in ARCHITECTURES and a
test (tests/test_architectures.py). This module imports no TensorFlow.

Layers transform the activations of one example; a batch dimension comes
first everywhere. Images enter the encoder as [784] vectors and leave the
decoder as [784] logits; `Reshape` turns them into 28x28x1 where a
convolution needs it.
"""

import collections
import math

IMAGE_SHAPE = (28, 28, 1)
IMAGE_PIXELS = 784

# A fully connected layer: `units` outputs, then `activation` (a name of
# ACTIVATIONS, or None), then dropout while training if `dropout`.
Dense = collections.namedtuple(
    'Dense', ['name', 'units', 'activation', 'dropout'], defaults=(None, False))
# A 2-d convolution (transpose=False) or transposed convolution, square
# kernel, TensorFlow's 'SAME' or 'VALID' padding.
Conv = collections.namedtuple(
    'Conv', ['name', 'filters', 'kernel', 'stride', 'padding', 'activation', 'transpose'],
    defaults=(False,))
# Each example's activations reshaped to `shape`; (-1,) flattens.
Reshape = collections.namedtuple('Reshape', ['shape'])

ACTIVATIONS = ('elu', 'tanh', 'relu', None)
# How the encoder's second head gives the posterior's standard deviation:
#   softplus      stddev = 1e-6 + softplus(output)  (the original's)
#   log_variance  stddev = exp(output / 2)          (the TensorFlow and Keras
#                                                    convolutional VAEs)
#   log_stddev    stddev = exp(output)              (the IWAE paper's code)
SCALES = ('softplus', 'log_variance', 'log_stddev')
# log p(x | z): 'clipped' is the original's, with the decoder's means clipped
# to [1e-8, 1 - 1e-8] and 1e-8 added in each log; 'exact' is the Bernoulli
# log-likelihood of the logits, -sigmoid_cross_entropy(x, logits).
LIKELIHOODS = ('clipped', 'exact')
# Weights' initialisation (biases start at zero):
#   tf1_variance_scaling  TF1 contrib's variance_scaling_initializer() (the
#                         original): truncated normal, stddev sqrt(2.6 / fan_in)
#   glorot_uniform        uniform in +-sqrt(6 / (fan_in + fan_out)) (Keras'
#                         default, and the IWAE code's)
INITIALIZERS = ('tf1_variance_scaling', 'glorot_uniform')
# The decoder's output biases start at 'zeros', or at 'train_mean_logit', the
# logit of the training images' mean pixel clipped to [0.001, 0.999] (the
# IWAE code's), which the trainer computes and passes to the graph.
OUTPUT_BIASES = ('zeros', 'train_mean_logit')
TRAIN_MEAN_CLIP = (0.001, 0.999)

Network = collections.namedtuple(
    'Network',
    [
        'architecture',  # the name it has in ARCHITECTURES.
        'hidden_units',  # the width it was built with, or None (none to choose).
        'latent_dim',  # size of z.
        'encoder',  # layers from the [784] image to the head's input.
        'head',  # (mean layer name, scale layer name): two Dense of latent_dim.
        'scale',  # one of SCALES.
        'decoder',  # layers from z to the [784] logits; the last has no activation.
        'likelihood',  # one of LIKELIHOODS.
        'initializer',  # one of INITIALIZERS.
        'output_bias',  # one of OUTPUT_BIASES.
        'xla_step',  # whether XLA compiles its training step (see below).
    ])
# A training step is one function either way: XLA compiles it where that is
# faster (the MLPs: it fuses the elementwise work around the products into
# their loops), and TensorFlow runs it kernel by kernel where that is faster
# (the convolutional networks: its oneDNN convolutions beat XLA's CPU
# convolutions; docs/architectures.md has the figures).


class ArchitectureError(ValueError):
  """An unknown architecture, or sizes it cannot take; the message says which."""


def _mlp(hidden_units, latent_dim):
  """The original's: 784 -500 (elu) -500 (tanh) -> z; z -500 (tanh) -500 (elu)
  -> 784, dropout after each hidden layer (hwalsuklee/tensorflow-mnist-VAE)."""
  return dict(
      encoder=(Dense('fc1', hidden_units, 'elu',
                     dropout=True), Dense('fc2', hidden_units, 'tanh', dropout=True)),
      head=('mean', 'stddev'),
      scale='softplus',
      decoder=(Dense('fc1', hidden_units, 'tanh',
                     dropout=True), Dense('fc2', hidden_units, 'elu',
                                          dropout=True), Dense('output', IMAGE_PIXELS)),
      likelihood='clipped',
      initializer='tf1_variance_scaling',
      output_bias='zeros',
      xla_step=True)


def _iwae_mlp(hidden_units, latent_dim):
  """Burda et al.'s one-stochastic-layer network (yburda/iwae): 784 -200 -200
  (tanh) -> 50-d z with stddev exp(.); z -200 -200 (tanh) -> 784 logits, the
  output bias at the logit of the training mean."""
  return dict(
      encoder=(Dense('fc1', hidden_units, 'tanh'), Dense('fc2', hidden_units, 'tanh')),
      head=('mean', 'log_stddev'),
      scale='log_stddev',
      decoder=(Dense('fc1', hidden_units, 'tanh'), Dense('fc2', hidden_units,
                                                         'tanh'), Dense('output', IMAGE_PIXELS)),
      likelihood='exact',
      initializer='glorot_uniform',
      output_bias='train_mean_logit',
      xla_step=True)


def _cvae_tutorial(hidden_units, latent_dim):
  """TensorFlow's "Convolutional Variational Autoencoder" tutorial: two
  stride-2 'valid' convolutions, one dense layer for mean and log-variance;
  a dense 7x7x32 layer and three transposed convolutions back."""
  del hidden_units  # It has no hidden dense layer.
  return dict(
      encoder=(Reshape(IMAGE_SHAPE), Conv('conv1', 32, 3, 2, 'VALID',
                                          'relu'), Conv('conv2', 64, 3, 2, 'VALID',
                                                        'relu'), Reshape((-1,))),
      head=('mean', 'log_variance'),
      scale='log_variance',
      decoder=(Dense('fc1', 7 * 7 * 32, 'relu'), Reshape(
          (7, 7, 32)), Conv('deconv1', 64, 3, 2, 'SAME', 'relu', transpose=True),
               Conv('deconv2', 32, 3, 2, 'SAME', 'relu',
                    transpose=True), Conv('output', 1, 3, 1, 'SAME', None,
                                          transpose=True), Reshape((IMAGE_PIXELS,))),
      likelihood='exact',
      initializer='glorot_uniform',
      output_bias='zeros',
      xla_step=False)


def _keras_cvae(hidden_units, latent_dim):
  """The Keras "Variational AutoEncoder" example (keras-io
  examples/generative/vae.py): 'same' convolutions, a dense layer of 16
  (hidden_units) before the heads; a dense 7x7x64 layer and three transposed
  convolutions back (its last sigmoid is the likelihood's)."""
  return dict(
      encoder=(Reshape(IMAGE_SHAPE), Conv('conv1', 32, 3, 2, 'SAME', 'relu'),
               Conv('conv2', 64, 3, 2, 'SAME', 'relu'), Reshape(
                   (-1,)), Dense('fc1', hidden_units, 'relu')),
      head=('mean', 'log_variance'),
      scale='log_variance',
      decoder=(Dense('fc1', 7 * 7 * 64, 'relu'), Reshape(
          (7, 7, 64)), Conv('deconv1', 64, 3, 2, 'SAME', 'relu', transpose=True),
               Conv('deconv2', 32, 3, 2, 'SAME', 'relu',
                    transpose=True), Conv('output', 1, 3, 1, 'SAME', None,
                                          transpose=True), Reshape((IMAGE_PIXELS,))),
      likelihood='exact',
      initializer='glorot_uniform',
      output_bias='zeros',
      xla_step=False)


# name -> (builder, default hidden_units or None where the network has no
# width to choose, what it is).
ARCHITECTURES = collections.OrderedDict([
    ('mlp', (_mlp, 500, 'the original MLP (elu/tanh, softplus scale, dropout)')),
    ('iwae_mlp', (_iwae_mlp, 200, 'the IWAE paper\'s MLP (tanh, exp scale)')),
    ('cvae_tutorial', (_cvae_tutorial, None,
                       'TensorFlow\'s convolutional VAE tutorial\'s network')),
    ('keras_cvae', (_keras_cvae, 16, 'the Keras VAE example\'s network')),
])
DEFAULT_ARCHITECTURE = 'mlp'
MAX_HIDDEN_UNITS = 8000
MAX_LATENT_DIM = 1000


def network(architecture=DEFAULT_ARCHITECTURE, hidden_units=None, latent_dim=20):
  """The Network of `architecture` at the given sizes.

  Args:
    architecture: a name of ARCHITECTURES.
    hidden_units: the width of its hidden layers; None takes the
      architecture's default. An architecture without one refuses a number.
    latent_dim: size of z, 1..MAX_LATENT_DIM.

  Raises:
    ArchitectureError: naming the architecture or size and what is wrong.
  """
  if architecture not in ARCHITECTURES:
    raise ArchitectureError('Unknown architecture %r; expected one of %s' %
                            (architecture, ', '.join(ARCHITECTURES)))
  builder, default_units, _ = ARCHITECTURES[architecture]
  if default_units is None and hidden_units is not None:
    raise ArchitectureError('--hidden_units=%s does not apply to architecture %s, '
                            'whose layers have fixed sizes' % (hidden_units, architecture))
  if hidden_units is None:
    hidden_units = default_units
  if hidden_units is not None and not 1 <= hidden_units <= MAX_HIDDEN_UNITS:
    raise ArchitectureError('--hidden_units=%s is outside 1..%d' % (hidden_units, MAX_HIDDEN_UNITS))
  if not 1 <= latent_dim <= MAX_LATENT_DIM:
    raise ArchitectureError('--latent_dim=%s is outside 1..%d' % (latent_dim, MAX_LATENT_DIM))
  result = Network(
      architecture=architecture,
      hidden_units=hidden_units,
      latent_dim=latent_dim,
      **builder(hidden_units, latent_dim))
  _check(result)
  return result


def _check(net):
  """Raises ArchitectureError unless `net`'s layers fit together."""
  shapes = dict(layer_shapes(net))
  if shapes['encoder'][-1] is None or len(shapes['encoder'][-1]) != 1:
    raise ArchitectureError('%s: the encoder ends in shape %s, not a vector' %
                            (net.architecture, shapes['encoder'][-1]))
  if shapes['decoder'][-1] != (IMAGE_PIXELS,):
    raise ArchitectureError('%s: the decoder ends in shape %s, not [%d]' %
                            (net.architecture, shapes['decoder'][-1], IMAGE_PIXELS))


def _conv_output_side(side, layer):
  if layer.transpose:
    if layer.padding == 'SAME':
      return side * layer.stride
    return (side - 1) * layer.stride + layer.kernel
  if layer.padding == 'SAME':
    return -(-side // layer.stride)
  return (side - layer.kernel) // layer.stride + 1


def _output_shape(shape, layer, net_name):
  """One example's activations after `layer`, from `shape` before it."""
  size = math.prod(shape)
  if isinstance(layer, Reshape):
    if layer.shape == (-1,):
      return (size,)
    if math.prod(layer.shape) != size:
      raise ArchitectureError('%s: cannot reshape %s into %s' % (net_name, shape, layer.shape))
    return tuple(layer.shape)
  if isinstance(layer, Dense):
    if len(shape) != 1:
      raise ArchitectureError('%s: dense layer %s gets shape %s; flatten it first' %
                              (net_name, layer.name, shape))
    return (layer.units,)
  if len(shape) != 3:
    raise ArchitectureError('%s: convolution %s gets shape %s, not [h, w, c]' %
                            (net_name, layer.name, shape))
  side = _conv_output_side(shape[0], layer)
  if side < 1:
    raise ArchitectureError('%s: convolution %s leaves nothing of %s' %
                            (net_name, layer.name, shape))
  return (side, _conv_output_side(shape[1], layer), layer.filters)


def layer_shapes(net):
  """(('encoder', shapes), ('decoder', shapes)): each example's activations
  before the first layer and after each layer of that part."""
  result = []
  for part, layers, shape in (('encoder', net.encoder, (IMAGE_PIXELS,)), ('decoder', net.decoder,
                                                                          (net.latent_dim,))):
    shapes = [shape]
    for layer in layers:
      shapes.append(_output_shape(shapes[-1], layer, net.architecture))
    result.append((part, shapes))
  return tuple(result)


# Variable scopes of the two halves: the checkpoint names are
# '<scope>/<layer>/weights' and '<scope>/<layer>/biases'.
ENCODER_SCOPE = 'gaussian_encoder'
DECODER_SCOPE = 'bernoulli_decoder'

# A layer with variables: its scope and name, its kind, the shapes of its
# weights and biases, its layer description (None for the head's two), and
# the shape of one example's input.
ParameterLayer = collections.namedtuple(
    'ParameterLayer', ['scope', 'name', 'layer', 'weights_shape', 'biases_shape', 'input_shape'])


def parameter_layers(net):
  """Every layer with variables, in the order the encoder and decoder apply
  them (the head's two after the encoder's layers): [ParameterLayer]."""
  shapes = dict(layer_shapes(net))
  result = []
  for scope, part, layers in ((ENCODER_SCOPE, 'encoder', net.encoder), (DECODER_SCOPE, 'decoder',
                                                                        net.decoder)):
    for layer, input_shape in zip(layers, shapes[part]):
      if isinstance(layer, Reshape):
        continue
      if isinstance(layer, Dense):
        weights = (input_shape[0], layer.units)
        biases = (layer.units,)
      elif layer.transpose:
        weights = (layer.kernel, layer.kernel, layer.filters, input_shape[-1])
        biases = (layer.filters,)
      else:
        weights = (layer.kernel, layer.kernel, input_shape[-1], layer.filters)
        biases = (layer.filters,)
      result.append(ParameterLayer(scope, layer.name, layer, weights, biases, tuple(input_shape)))
    if part == 'encoder':
      features = shapes['encoder'][-1]
      for name in net.head:
        result.append(
            ParameterLayer(scope, name, Dense(name, net.latent_dim), (features[0], net.latent_dim),
                           (net.latent_dim,), tuple(features)))
  return result


def variable_shapes(net):
  """{checkpoint name: shape} of the network's variables."""
  shapes = {}
  for layer in parameter_layers(net):
    prefix = '%s/%s/' % (layer.scope, layer.name)
    shapes[prefix + 'weights'] = list(layer.weights_shape)
    shapes[prefix + 'biases'] = list(layer.biases_shape)
  return shapes


def dropout_shapes(net):
  """One example's shape at each dropout of a training step, in the order
  the encoder and decoder apply them."""
  shapes = dict(layer_shapes(net))
  return [
      shape for part, layers in (('encoder', net.encoder), ('decoder', net.decoder))
      for layer, shape in zip(layers, shapes[part][1:]) if getattr(layer, 'dropout', False)
  ]


def multiply_adds(net):
  """{'encoder': n, 'decoder': n}: the multiply-adds of one example's forward
  pass through each half (the head counts in the encoder), matrix products
  and convolutions only."""
  totals = {'encoder': 0, 'decoder': 0}
  for layer in parameter_layers(net):
    part = 'encoder' if layer.scope == ENCODER_SCOPE else 'decoder'
    if isinstance(layer.layer, Dense):
      totals[part] += math.prod(layer.weights_shape)
    else:
      # Each output position of a convolution, or each input position of a
      # transposed one, meets the whole kernel.
      positions = (layer.input_shape if layer.layer.transpose else _conv_output(layer))
      totals[part] += (positions[0] * positions[1] * math.prod(layer.weights_shape))
  return totals


def _conv_output(layer):
  side = _conv_output_side(layer.input_shape[0], layer.layer)
  return (side, _conv_output_side(layer.input_shape[1], layer.layer))


def activations_per_example(net):
  """The floats of one example's activations in a forward pass (every
  layer's output, the encoder's heads and z): what a training step keeps per
  example for its backward pass, about."""
  return (sum(math.prod(shape) for _, shapes in layer_shapes(net) for shape in shapes)
          + 3 * net.latent_dim)


def training_flops_per_example(net):
  """FLOPs of one example's training step: forward and backward (about three
  forward passes), 2 FLOPs per multiply-add."""
  adds = multiply_adds(net)
  return 6 * (adds['encoder'] + adds['decoder'])


def from_variables(shapes, where):
  """The Network whose variables are `shapes` ({checkpoint name: shape}, other
  variables such as the optimizer's ignored): each architecture's variable
  names and shapes are its own (tests/test_architectures.py checks that no two
  networks share them), so a checkpoint says which network it holds.

  Raises:
    ArchitectureError: naming `where` when no architecture has these
      variables.
  """
  model_shapes = {
      name: list(shape)
      for name, shape in shapes.items()
      if name.startswith((ENCODER_SCOPE + '/',
                          DECODER_SCOPE + '/')) and name.split('/')[-1] in ('weights', 'biases')
  }
  mean_biases = model_shapes.get(ENCODER_SCOPE + '/mean/biases')
  if mean_biases is None:
    raise ArchitectureError('%s holds no VAE of this project (it has no %s/mean/biases)' %
                            (where, ENCODER_SCOPE))
  widths = sorted({dimension for shape in model_shapes.values() for dimension in shape})
  for architecture, (_, default_units, _) in ARCHITECTURES.items():
    for hidden_units in (widths if default_units is not None else [None]):
      try:
        candidate = network(architecture, hidden_units, mean_biases[0])
      except ArchitectureError:
        continue
      if variable_shapes(candidate) == model_shapes:
        return candidate
  raise ArchitectureError('%s holds variables of no known architecture (%s)' %
                          (where, ', '.join(sorted(model_shapes))))


# What a run records of its network (config.json): its name and sizes.
RECORD_FIELDS = ('architecture', 'hidden_units', 'latent_dim')


def describe(net):
  """'mlp (hidden_units 500, latent_dim 20)': a network in messages."""
  sizes = ', '.join('%s %s' % (field, getattr(net, field))
                    for field in RECORD_FIELDS[1:]
                    if getattr(net, field) is not None)
  return '%s (%s)' % (net.architecture, sizes)


def record(net):
  """{'architecture', 'hidden_units', 'latent_dim'} of `net`."""
  return {field: getattr(net, field) for field in RECORD_FIELDS}
