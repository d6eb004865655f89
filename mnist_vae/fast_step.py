"""What makes the model's arithmetic fast: machinery beside model.py, not in it.

  compiled_training_step()  a training step's loss, gradients and dropout
                            masks as one XLA computation (what train.py runs),
                            over model.py's forward pass
  dropout()                 the separate-ops graph's dropout (16-bit uniforms)
  compiled_log_likelihood() the likelihood of many draws of z in one XLA
                            computation with cheaper logarithms (evaluation)

Each is checked against model.py's plain ops in tests/test_fast_step.py: the
same numbers up to float32 rounding.
"""

import collections
import math

import tensorflow.compat.v1 as tf

from mnist_vae import architectures
from mnist_vae import input_pipeline
from mnist_vae import model


def check_keep_prob(keep_prob):
  if not 0.0 < keep_prob <= 1.0:
    raise ValueError('keep_prob must be in (0, 1], not %r' % keep_prob)


def dropout(keep_prob):
  """The dropout of a separate-ops training tower: hidden -> hidden, for
  model.encode and model.decode.

  Inverted dropout: keeps each unit with probability keep_prob, scaled up.
  TF1's `tf.nn.dropout(x, 0.9)` meant *keep* 0.9 (TF2's means drop 0.9). The
  mask comes from 16-bit uniforms, two per 32-bit random draw, which halves
  the random numbers generated. The probability kept is then
  round(keep_prob * 65536) / 65536, within 8e-6 of keep_prob; where that
  rounds to 0 or to 65536 (keep_prob below 2^-17 or above 1 - 2^-17) 16 bits
  cannot express it, and a float32 uniform decides.
  """
  check_keep_prob(keep_prob)

  def apply(hidden):
    if keep_prob == 1.0:
      return hidden
    if _dropout_threshold(keep_prob) is None:
      return apply_dropout(hidden, tf.random.uniform(tf.shape(hidden)), keep_prob)
    size = tf.size(hidden)
    return apply_dropout(hidden, _dropout_bits(size), keep_prob, size)

  return apply


def _dropout_threshold(keep_prob):
  """round(keep_prob * 2^16), or None where 16-bit uniforms cannot express
  keep_prob (see `dropout`)."""
  threshold = int(round(keep_prob * 65536))
  return threshold if 0 < threshold < 65536 else None


def _dropout_words(size):
  """The int32 words that hold a mask's `size` 16-bit uniforms, two a word."""
  return (size + 1) // 2


def _dropout_bits(size):
  """int32 [ceil(size / 2)] uniform bits: a mask's `size` 16-bit uniforms."""
  return tf.random.uniform([_dropout_words(size)], minval=-2**31, maxval=2**31 - 1, dtype=tf.int32)


def apply_dropout(inputs, draws, keep_prob, size=None):
  """`inputs` with dropout's mask made from `draws`: `_dropout_bits` of
  inputs' size (int32 [ceil(size / 2)], or more: the first words serve), or
  float32 uniforms of inputs' shape where `_dropout_threshold(keep_prob)` is
  None. `size` is tf.size(inputs) if the caller has it."""
  threshold = _dropout_threshold(keep_prob)
  if threshold is None:
    return tf.where(draws < keep_prob, inputs * (1.0 / keep_prob), tf.zeros_like(inputs))
  if size is None:
    size = tf.size(inputs)
  uniform16 = tf.reshape(tf.bitcast(draws, tf.uint16), [-1])[:size]
  keep = tf.reshape(uniform16 < threshold, tf.shape(inputs))
  # One multiply by a 0-or-scale mask, forward and backward (a select needed
  # a zeros tensor and a select each way).
  return inputs * tf.where_v2(keep, 65536.0 / threshold, 0.0)


def _compiled_dropout_key():
  """int32 [2]: the seed of one step's dropout masks inside the compiled step,
  drawn by a stateful op, so that it follows the graph's seed (each seed, and
  each worker of a cluster, its own sequence of masks)."""
  return tf.random.uniform([2], minval=-2**31, maxval=2**31 - 1, dtype=tf.int32, name='dropout_key')


def _threefry_dropout_bits(key, num_layers, largest_size):
  """`_dropout_bits` for each of `num_layers` dropout layers, made inside a
  compiled function: int32 [num_layers, ceil(largest_size / 2)],
  Threefry-2x32 bits of `key` (a smaller layer uses the first words of its
  row). XLA builds Threefry from integer adds, rotations and xors, which it
  fuses into vector loops, where TensorFlow's Philox kernels would run
  before the computation could start."""
  return tf.random.stateless_uniform(
      tf.stack([num_layers, _dropout_words(largest_size)]),
      seed=key,
      minval=None,
      maxval=None,
      dtype=tf.int32,
      alg='threefry')


TrainingStep = collections.namedtuple(
    'TrainingStep',
    [
        'loss_terms',  # model.LossTerms of the batch.
        'objective',  # float32 []: what the step minimizes.
        'grads_and_vars',  # [(gradient of objective, variable)].
        'gradient_sum',  # float32 []: the sum of every gradient entry.
    ])


def compiled_training_step(images,
                           network,
                           keep_prob=1.0,
                           matmul_dtype=tf.float32,
                           kl_weight=None,
                           noise=None,
                           output_bias=None,
                           iw_samples=1,
                           bound='iwae',
                           train_kl='closed_form'):
  """A training step's loss and gradients as one function, compiled by XLA
  where the network's description says so (network.xla_step).

  The same network, loss and objective as model.inference, model.loss and
  model.kl_weight_at build from separate ops, in one
  `tf.function(jit_compile=network.xla_step)`: for the MLPs XLA fuses the
  activations, dropout's masks, the likelihood and their gradients into loops
  around the matrix products, where TensorFlow's executor would run a kernel
  for each of about 150 ops; the convolutional networks' function runs
  TensorFlow's own (oneDNN) kernels. Equal to the separate ops up to float32
  rounding.

  The random numbers follow the graph's seed: a stateful op draws each
  step's dropout key and z's noise outside the computation, and inside an XLA
  computation the masks' bits are Threefry bits of that key. The masks
  therefore differ from those the separate ops draw for a seed.

  Args:
    images: float32 [batch, 784] in [0, 1].
    network: architectures.Network.
    keep_prob: dropout keep probability where the network has dropout.
    matmul_dtype: see model.LayerOps.
    kl_weight: float32 [] (see model.kl_weight_at), or None to minimize the
      negative ELBO itself.
    noise: float32 [iw_samples * batch, latent_dim] standard normal draws of
      z; None draws them here.
    output_bias: see model.create_variables.
    iw_samples: K, the draws of z per image; with K > 1 each image is
      repeated K times (model.repeat_for_draws), dropout and all, and the
      step maximizes `bound` (one of model.BOUNDS) over the K draws.
    bound: 'iwae' or 'elbo' (see model.BOUNDS); with K = 1 both are the ELBO
      of one draw, the objective as it always was.
    train_kl: how the ELBO's KL term is estimated, one of model.KL_ESTIMATES.

  Returns:
    A TrainingStep over the variables of model.create_variables (created here
    if the graph has none).
  """
  check_keep_prob(keep_prob)
  layers = model.create_variables(network, output_bias)
  images = model.repeat_for_draws(images, iw_samples)
  batch = tf.shape(images)[0]
  dropout_sizes = [math.prod(shape) for shape in architectures.dropout_shapes(network)]
  uses_dropout = keep_prob != 1.0 and bool(dropout_sizes)
  # What the computation makes its masks from: a key for Threefry inside, or
  # (where 16-bit uniforms cannot express keep_prob) float32 uniforms.
  bits_inside = (uses_dropout and _dropout_threshold(keep_prob) is not None and network.xla_step)
  if bits_inside:
    draws = _compiled_dropout_key()
  elif uses_dropout:
    draws = [
        tf.random.uniform([batch] + list(shape)) for shape in architectures.dropout_shapes(network)
    ]
  else:
    draws = []
  if noise is None:
    noise = tf.random.normal([batch, network.latent_dim])
  weighted = kl_weight is not None

  @tf.function(jit_compile=network.xla_step, autograph=False)
  def loss_and_gradients(images, noise, draws, weights, kl_weight):
    if bits_inside:
      draws = tf.unstack(
          _threefry_dropout_bits(draws, len(dropout_sizes),
                                 tf.shape(images)[0] * max(dropout_sizes)))
    # One mask after each dropout layer, in the order the layers come.
    masks = iter(draws)

    def dropout_of(hidden):
      return apply_dropout(hidden, next(masks), keep_prob) if uses_dropout else hidden

    z_mean, z_stddev = model.forward_encoder(
        images, network, model.LayerOps(model.ENCODER_SCOPE, weights, matmul_dtype), dropout_of)
    z = model.reparameterize(z_mean, z_stddev, noise)
    logits = model.forward_decoder(z, network,
                                   model.LayerOps(model.DECODER_SCOPE, weights, matmul_dtype),
                                   dropout_of)
    terms = model.loss(images, model.Inference(z_mean, z_stddev, z, logits), network)
    objective = model.training_objective(terms, z_mean, z_stddev, noise,
                                         kl_weight if weighted else None, iw_samples, bound,
                                         train_kl)
    gradients = tf.gradients(objective, tf.nest.flatten(weights))
    gradient_sum = tf.add_n([tf.reduce_sum(gradient) for gradient in gradients])
    return terms, objective, gradients, gradient_sum

  weights = {name: tuple(variable.value() for variable in pair) for name, pair in layers.items()}
  terms, objective, gradients, gradient_sum = loss_and_gradients(
      images, noise, draws, weights, kl_weight if weighted else tf.constant(1.0))
  # Named as model.loss names them outside a function.
  terms = terms._replace(
      **{
          name: tf.identity(getattr(terms, name), name=name)
          for name in ('reconstruction', 'kl_divergence', 'neg_elbo')
      })
  if model.objective_is_neg_elbo(weighted, iw_samples, bound, train_kl):
    objective = terms.neg_elbo
  else:
    objective = tf.identity(objective, name='objective')
  return TrainingStep(terms, objective, list(zip(gradients, tf.nest.flatten(layers))), gradient_sum)


# (1 + u) <= 2, so a product of this many factors stays below float32's
# largest number (2^128).
_MAX_FACTORS_PER_PRODUCT = 126
# log(m) - (m - 1) + (m - 1)^2 / 2 for m - 1 in [sqrt(1/2) - 1, sqrt(2) - 1]:
# the minimax polynomial of Moshier's Cephes logf, highest power first.
_LOG_MANTISSA_POLYNOMIAL = (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
                            1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
                            3.3333331174e-1)
# log(2) split so that exponent * _LOG2_HIGH is exact in float32.
_LOG2_HIGH, _LOG2_LOW = 0.693359375, -2.12194440e-4


def log_of_positive_normal(values):
  """log(values) for float32 values that are positive and normal (>= 2^-126),
  within about 1e-7 relative: XLA compiles tf.log to a call per element, this
  to a few vector instructions (exponent from the bits, a polynomial in the
  mantissa). NaN and Inf are not handled: callers pass neither."""
  bits = tf.bitcast(values, tf.int32)
  exponent = tf.bitwise.right_shift(bits, 23) - 127
  # The mantissa as a float in [1, 2), then folded into [sqrt(1/2), sqrt(2)).
  mantissa = tf.bitcast(
      tf.bitwise.bitwise_or(tf.bitwise.bitwise_and(bits, 0x007fffff), 0x3f800000), tf.float32)
  folded = mantissa > math.sqrt(2.0)
  x = tf.where_v2(folded, 0.5 * mantissa, mantissa) - 1.0
  exponent = tf.cast(exponent, tf.float32) + tf.cast(folded, tf.float32)
  polynomial = _LOG_MANTISSA_POLYNOMIAL[0]
  for coefficient in _LOG_MANTISSA_POLYNOMIAL[1:]:
    polynomial = polynomial * x + coefficient
  x_squared = x * x
  return (x + (polynomial * x * x_squared - 0.5 * x_squared + exponent * _LOG2_LOW)
          + exponent * _LOG2_HIGH)


def _compiled_sum(likelihood):

  @tf.function(jit_compile=True)
  def log_likelihood(images, logits):
    pixels = int(logits.shape[-1])
    group = max(size for size in range(1, _MAX_FACTORS_PER_PRODUCT + 1) if pixels % size == 0)
    u, terms = model.pixel_terms_but_log1p(images, logits, likelihood, log_of_positive_normal)
    factors = tf.reshape(1.0 + u, tf.concat([tf.shape(u)[:-1], [pixels // group, group]], axis=0))
    sum_log1p_u = tf.reduce_sum(tf.log(tf.reduce_prod(factors, axis=-1)), axis=-1)
    return tf.reduce_sum(terms, axis=-1) - sum_log1p_u

  return log_likelihood


_COMPILED_SUMS = {likelihood: _compiled_sum(likelihood) for likelihood in architectures.LIKELIHOODS}


def compiled_log_likelihood(network):
  """model.bernoulli_log_likelihood's sum for `network`, (images, logits) ->
  float32 [..., batch], in one XLA computation with two of its three
  logarithms per pixel gone (the k=1000 NLL computes billions):

  - sum_i log1p(u_i) is taken as sum over groups of log(prod_i (1 + u_i)),
    one log per group of up to 126 pixels (each factor is in (1, 2]);
  - the clipped likelihood's log(max(u + 1e-8 (1 + u), 2e-8 (1 + u))), whose
    argument is >= 2e-8, by `log_of_positive_normal`.

  Both agree with the graph version to float32 rounding (about 1e-7 relative
  per term). NaN logits give NaN, as there. Forward only.
  """
  return _COMPILED_SUMS[network.likelihood]


# What stopped a compiled loop's call: fetches['non_finite'] indexes this.
NON_FINITE = (None, ('loss', 'NaN'), ('loss', 'Inf'), ('gradients', 'NaN'), ('gradients', 'Inf'))
# Optimizers whose update compiled_training_loop computes itself.
LOOP_OPTIMIZERS = ('adam', 'sgd')

TrainingLoop = collections.namedtuple(
    'TrainingLoop',
    [
        'steps_to_run',  # int32 [] placeholder: the steps of this call, 1..max.
        'train_op',  # runs them, then assigns every variable.
        'fetches',  # {name: tensor} after the train op: 'step' (the global
        # step), the last step's loss terms ('neg_elbo',
        # 'reconstruction', 'kl_divergence', 'objective',
        # 'kl_weight', 'learning_rate') and 'non_finite' (int32,
        # NON_FINITE's index of what stopped the call, 0: none).
    ])


def compiled_training_loop(blocks,
                           network,
                           optimizer,
                           keep_prob=1.0,
                           matmul_dtype=tf.float32,
                           learning_rate_at=None,
                           kl_weight_at=None,
                           output_bias=None,
                           iw_samples=1,
                           bound='iwae',
                           train_kl='closed_form',
                           pixels=None,
                           binarize='none'):
  """Several training steps, updates included, as one XLA computation.

  Where a step is short (a small batch of a small network), the cost of a
  session call and of the optimizer's separate kernels is a large part of it;
  here up to max_steps steps run inside one compiled loop per session call,
  each the same forward pass, loss and gradients as compiled_training_step,
  then the optimizer's update, computed as TensorFlow's kernels compute it,
  on the optimizer's own slot variables (a checkpoint resumes either way).

  A step whose objective or gradients are not finite is not applied: the loop
  stops before it, the variables hold the previous step's values, and
  fetches['non_finite'] says what was not (NON_FINITE; the step that failed is
  fetches['step'] + 1).

  The random numbers: each call draws one key with a stateful op (so that it
  follows the graph's seed) and each step's z noise and dropout masks are
  Threefry numbers of that key and the step's index in the call.

  Args:
    blocks: float32 [max_steps, batch, 784]: a batch of images for each step
      a call may take (a call of n steps uses the first n); or, with
      `pixels`, int [max_steps, batch] indices of the batches' examples.
    network: architectures.Network.
    optimizer: a tf.compat.v1 GradientDescentOptimizer or AdamOptimizer (its
      hyperparameters and slot names; see training.make_optimizer).
    keep_prob: dropout keep probability where the network has dropout.
    matmul_dtype: see model.LayerOps.
    learning_rate_at: int64 [] global step -> float32 [] learning rate, or
      None for the optimizer's own constant rate.
    kl_weight_at: int64 [] global step -> float32 [] KL weight, or None to
      minimize the negative ELBO itself.
    output_bias: see model.create_variables.
    iw_samples, bound, train_kl: as for compiled_training_step.
    pixels: None, or uint8 [num_examples, 784]: the training split as
      input_pipeline.read_split_pixels reads it, from which the loop gathers
      each batch and makes its images (`binarize`: a dynamic binarization's
      uniforms are Threefry numbers of the step's key). Nothing then crosses
      into the computation per call but the indices.
    binarize: see `pixels`.

  Returns:
    A TrainingLoop.
  """
  check_keep_prob(keep_prob)
  name = {
      tf.train.AdamOptimizer: 'adam',
      tf.train.GradientDescentOptimizer: 'sgd'
  }.get(type(optimizer))
  if name is None:
    raise ValueError('compiled_training_loop updates with %s only, not %s' %
                     (' or '.join(LOOP_OPTIMIZERS), type(optimizer).__name__))
  layers = model.create_variables(network, output_bias)
  global_step = tf.train.get_or_create_global_step()
  variables = tf.nest.flatten(layers)
  if name == 'adam':
    optimizer._create_slots(variables)  # pylint: disable=protected-access
    slots = [(optimizer.get_slot(variable, 'm'), optimizer.get_slot(variable, 'v'))
             for variable in variables]
    beta_powers = list(optimizer._get_beta_accumulators())  # pylint: disable=protected-access
    hyper = (optimizer._beta1, optimizer._beta2, optimizer._epsilon)  # pylint: disable=protected-access
  else:
    slots, beta_powers, hyper = [], [], ()
  constant_rate = optimizer._lr if name == 'adam' else optimizer._learning_rate  # noqa: E501 pylint: disable=protected-access
  dropout_shapes = architectures.dropout_shapes(network)
  dropout_sizes = [math.prod(shape) for shape in dropout_shapes]
  uses_dropout = keep_prob != 1.0 and bool(dropout_sizes)
  threshold = _dropout_threshold(keep_prob)
  steps_to_run = tf.placeholder_with_default(tf.constant(1), [], name='steps_to_run')
  key = _compiled_dropout_key()

  def one_step(step, index, weights_list, images):
    """(loss terms, objective, gradients, kl weight) of one step."""
    weights = tf.nest.pack_sequence_as(layers, weights_list)
    step_key = tf.stack([key[0], key[1] + index])
    if pixels is not None:
      batch_pixels = tf.gather(pixels, images)
      images = input_pipeline.images_from_pixels(
          batch_pixels, binarize,
          tf.random.stateless_uniform(
              tf.shape(batch_pixels), seed=tf.stack([key[1] + index, key[0]]), alg='threefry')
          if binarize == 'dynamic' else None)
    images = model.repeat_for_draws(images, iw_samples)
    batch = tf.shape(images)[0]
    noise = tf.random.stateless_normal([batch, network.latent_dim], seed=step_key, alg='threefry')
    if uses_dropout and threshold is not None:
      draws = tf.unstack(
          _threefry_dropout_bits(step_key[::-1], len(dropout_sizes), batch * max(dropout_sizes)))
    elif uses_dropout:
      draws = [
          tf.random.stateless_uniform(
              tf.concat([[batch], shape], 0), seed=step_key[::-1], alg='threefry')
          for shape in dropout_shapes
      ]
    masks = iter(draws) if uses_dropout else None

    def dropout_of(hidden):
      return apply_dropout(hidden, next(masks), keep_prob) if uses_dropout else hidden

    z_mean, z_stddev = model.forward_encoder(
        images, network, model.LayerOps(model.ENCODER_SCOPE, weights, matmul_dtype), dropout_of)
    z = model.reparameterize(z_mean, z_stddev, noise)
    logits = model.forward_decoder(z, network,
                                   model.LayerOps(model.DECODER_SCOPE, weights, matmul_dtype),
                                   dropout_of)
    terms = model.loss(images, model.Inference(z_mean, z_stddev, z, logits), network)
    kl_weight = None if kl_weight_at is None else kl_weight_at(step)
    objective = model.training_objective(terms, z_mean, z_stddev, noise, kl_weight, iw_samples,
                                         bound, train_kl)
    gradients = tf.gradients(objective, weights_list)
    return terms, objective, gradients, kl_weight

  def update(rate, applies, weights_list, slot_values, powers, gradients):
    """The optimizer's update of every variable, as its kernel computes it,
    times `applies` (1.0, or 0.0 for no change at all)."""
    if name == 'sgd':
      return ([w - (applies * rate) * g for w, g in zip(weights_list, gradients)], slot_values,
              powers)
    beta1, beta2, epsilon = hyper
    # ResourceApplyAdam: m += (g - m) (1 - beta1); v += (g^2 - v) (1 - beta2);
    # var -= lr sqrt(1 - beta2^t) / (1 - beta1^t) m / (sqrt(v) + epsilon).
    step_rate = applies * rate * tf.sqrt(1.0 - powers[1]) / (1.0 - powers[0])
    new_weights, new_slots = [], []
    for weight, (m, v), gradient in zip(weights_list, slot_values, gradients):
      m = m + (gradient - m) * (applies * (1.0 - beta1))
      v = v + (tf.square(gradient) - v) * (applies * (1.0 - beta2))
      new_weights.append(weight - (m * step_rate) / (tf.sqrt(v) + epsilon))
      new_slots.append((m, v))
    unchanged = 1.0 - applies
    return new_weights, new_slots, [
        powers[0] * (beta1 * applies + unchanged), powers[1] * (beta2 * applies + unchanged)
    ]

  @tf.function(jit_compile=True, autograph=False)
  def run_steps(blocks, steps_to_run, step, weights_list, slot_values, powers):
    zero = tf.constant(0.0)
    empty_terms = (zero, zero, zero, zero, zero, zero)

    def body(index, step, weights_list, slot_values, powers, _, non_finite):
      terms, objective, gradients, kl_weight = one_step(step, index, weights_list, blocks[index])
      gradient_sum = tf.add_n([tf.reduce_sum(gradient) for gradient in gradients])
      what = tf.where(
          tf.math.is_finite(objective),
          tf.where(
              tf.math.is_finite(gradient_sum), 0, tf.where(tf.math.is_nan(gradient_sum), 3, 4)),
          tf.where(tf.math.is_nan(objective), 1, 2))
      finite = tf.equal(what, 0)
      rate = (
          tf.cast(constant_rate, tf.float32)
          if learning_rate_at is None else learning_rate_at(step))
      # A step that is not finite updates nothing: its gradients count as
      # zeros and its update is scaled by zero, which leaves every variable
      # and slot exactly as it was. Inside the update's elementwise loops this
      # costs nothing, where a branch or a select per variable would copy
      # every variable and slot at each step.
      applies = tf.cast(finite, tf.float32)
      gradients = [tf.where(finite, gradient, tf.zeros_like(gradient)) for gradient in gradients]
      new_weights, new_slots, new_powers = update(rate, applies, weights_list, slot_values, powers,
                                                  gradients)
      summary = (terms.neg_elbo, terms.reconstruction, terms.kl_divergence, objective,
                 zero if kl_weight is None else kl_weight, rate)
      return (index + 1, step + tf.cast(finite, tf.int64), new_weights, new_slots, new_powers,
              summary, what)

    _, step, weights_list, slot_values, powers, summary, non_finite = tf.while_loop(
        lambda index, *state: tf.logical_and(index < steps_to_run, tf.equal(state[-1], 0)),
        body,
        (tf.constant(0), step, weights_list, slot_values, powers, empty_terms, tf.constant(0)),
        maximum_iterations=int(blocks.shape[0]))
    return step, weights_list, slot_values, powers, summary, non_finite

  step, new_weights, new_slots, new_powers, summary, non_finite = run_steps(
      blocks, steps_to_run, global_step.read_value(), [variable.value() for variable in variables],
      [(m.value(), v.value()) for m, v in slots], [power.value() for power in beta_powers])
  assignments = [variable.assign(value) for variable, value in zip(variables, new_weights)]
  for (m, v), (new_m, new_v) in zip(slots, new_slots):
    assignments += [m.assign(new_m), v.assign(new_v)]
  assignments += [power.assign(value) for power, value in zip(beta_powers, new_powers)]
  assignments.append(global_step.assign(step))
  train_op = tf.group(*assignments, name='train_steps')
  with tf.control_dependencies([train_op]):
    fetches = {'step': global_step.read_value(), 'non_finite': tf.identity(non_finite)}
    names = ('neg_elbo', 'reconstruction', 'kl_divergence', 'objective', 'kl_weight',
             'learning_rate')
    fetches.update({name: tf.identity(value, name=name) for name, value in zip(names, summary)})
  if kl_weight_at is None:
    del fetches['kl_weight']
    if model.objective_is_neg_elbo(False, iw_samples, bound, train_kl):
      del fetches['objective']
  if learning_rate_at is None:
    del fetches['learning_rate']
  return TrainingLoop(steps_to_run, train_op, fetches)
