"""Stage 3 of the data flow: the graph of the MLP variational autoencoder.

Builds graphs only; it reads no flags and touches no files. The functions
follow the classic TF1 tutorial contract:

  inference()  encoder -> reparameterized z -> decoder logits
  loss()       per-example and mean reconstruction, KL and negative ELBO
  compiled_training_step()  the loss and its gradients as one XLA
               computation (what train.py runs; inference() and loss() build
               the same from separate ops)
  training()   the optimizer step and the global step, refusing non-finite
               updates
  log_importance_weights()  the terms of the importance-weighted bound

The network is the original one (hwalsuklee/tensorflow-mnist-VAE and the TF1
script this project reproduces): a Gaussian MLP encoder
784 -500 (elu) -500 (tanh) -> mean, stddev = 1e-6 + softplus(.), and a
Bernoulli MLP decoder latent -500 (tanh) -500 (elu) -784 sigmoid, with
dropout after each hidden layer while training only.
"""

import collections
import math

import tensorflow.compat.v1 as tf

from mnist_vae.data_prep.records import IMAGE_PIXELS

# Outputs of the decoder are clipped to [EPSILON, 1 - EPSILON] and EPSILON is
# added inside each log, exactly as in the original.
EPSILON = 1e-8
STDDEV_FLOOR = 1e-6
ENCODER_SCOPE = 'gaussian_encoder'
DECODER_SCOPE = 'bernoulli_decoder'
# The digit classifier that scores samples (sample_quality.py), not the VAE.
CLASSIFIER_SCOPE = 'digit_classifier'
CLASSIFIER_LAYERS = (512, 128)

OPTIMIZERS = ('sgd', 'adam', 'adagrad', 'rmsprop', 'momentum')
# --matmul_precision: the dtype `dense` multiplies in.
MATMUL_DTYPES = {'float32': tf.float32, 'bfloat16': tf.bfloat16}
# Messages of the numerics checks in `training`, for callers to recognise.
NUMERICS_CHECK_LOSS = 'non-finite loss'
NUMERICS_CHECK_GRADIENTS = 'non-finite gradients'

# The size of the network: everything a graph-building function needs to know
# to create (or reuse) the variables of a checkpoint.
ModelSize = collections.namedtuple(
    'ModelSize', ['hidden_units', 'latent_dim', 'image_pixels'],
    defaults=(IMAGE_PIXELS,))

Inference = collections.namedtuple(
    'Inference', ['z_mean', 'z_stddev', 'z', 'logits'])
LossTerms = collections.namedtuple('LossTerms', [
    'log_likelihood',  # float32 [batch]: log p(x | z), summed over pixels.
    'kl_per_example',  # float32 [batch]: KL(q(z | x) || p(z)).
    'reconstruction',  # float32 []: mean over the batch of -log_likelihood.
    'kl_divergence',   # float32 []: mean over the batch of kl.
    'neg_elbo',        # float32 []: reconstruction + kl_divergence.
])


def dense(inputs, units, name, matmul_dtype=tf.float32):
  """Fully connected layer, initialised as TF1's contrib layers did.

  `tf.contrib.layers.variance_scaling_initializer()` (factor 2, fan-in,
  truncated normal) drew weights with stddev sqrt(1.3 * 2 / fan_in); the 1.3
  compensates for the truncation at two standard deviations.

  Args:
    inputs: float32 [batch, fan_in].
    units: output width.
    name: variable scope holding `weights` [fan_in, units] and `biases` [units].
    matmul_dtype: tf.float32, or tf.bfloat16 to multiply in bfloat16 (inputs
      and weights rounded to 8 bits of mantissa, float32 accumulation and
      result); the variables stay float32 either way.

  Returns:
    float32 [batch, units], before any activation.
  """
  weights, biases = _layer_variables(int(inputs.shape[-1]), units, name)
  return _affine(inputs, weights, biases, matmul_dtype)


def _layer_variables(fan_in, units, name):
  """`dense`'s variables in scope `name`: weights [fan_in, units], biases
  [units]."""
  with tf.variable_scope(name):
    weights = tf.get_variable(
        'weights', [fan_in, units],
        initializer=tf.truncated_normal_initializer(
            stddev=math.sqrt(1.3 * 2.0 / fan_in)))
    biases = tf.get_variable('biases', [units],
                             initializer=tf.zeros_initializer())
  return weights, biases


def _affine(inputs, weights, biases, matmul_dtype):
  if matmul_dtype == tf.float32:
    products = tf.matmul(inputs, weights)
  else:
    products = tf.cast(tf.matmul(tf.cast(inputs, matmul_dtype),
                                 tf.cast(weights, matmul_dtype)), tf.float32)
  return tf.nn.bias_add(products, biases)


def dense_pair(inputs, units, names, matmul_dtype=tf.float32):
  """Two `dense` layers of the same input, as one product of twice the width.

  Each layer keeps its own variables (scopes names[0] and names[1]), so a
  checkpoint is the same as with two `dense` calls; their weights are
  concatenated for the product, whose halves are the two outputs. One
  128x500 by 500x40 product, forward and backward, costs less than two of
  500x20.

  Returns:
    (float32 [batch, units], float32 [batch, units]).
  """
  fan_in = int(inputs.shape[-1])
  return _affine_pair(inputs, *(_layer_variables(fan_in, units, name)
                                for name in names), matmul_dtype)


def _affine_pair(inputs, first, second, matmul_dtype):
  """`dense_pair`'s product over two layers' (weights, biases)."""
  both = _affine(inputs, tf.concat([first[0], second[0]], axis=1),
                 tf.concat([first[1], second[1]], axis=0), matmul_dtype)
  return tf.split(both, 2, axis=1)


def _dropout(inputs, keep_prob):
  """Inverted dropout: keeps each unit with probability keep_prob, scaled up.

  TF1's `tf.nn.dropout(x, 0.9)` meant *keep* 0.9 (TF2's means drop 0.9). The
  mask comes from 16-bit uniforms, two per 32-bit random draw, which halves
  the random numbers generated (bench/throughput.py measures the masks). The
  probability kept is then round(keep_prob * 65536) / 65536, within 8e-6 of
  keep_prob; where that rounds to 0 or to 65536 (keep_prob below 2^-17 or
  above 1 - 2^-17) 16 bits cannot express it, and a float32 uniform decides.
  """
  _check_keep_prob(keep_prob)
  if keep_prob == 1.0:
    return inputs
  if _dropout_threshold(keep_prob) is None:
    return _apply_dropout(inputs, tf.random.uniform(tf.shape(inputs)), keep_prob)
  size = tf.size(inputs)
  return _apply_dropout(inputs, _dropout_bits(size), keep_prob, size)


def _check_keep_prob(keep_prob):
  if not 0.0 < keep_prob <= 1.0:
    raise ValueError('keep_prob must be in (0, 1], not %r' % keep_prob)


def _dropout_threshold(keep_prob):
  """round(keep_prob * 2^16), or None where 16-bit uniforms cannot express
  keep_prob (see `_dropout`)."""
  threshold = int(round(keep_prob * 65536))
  return threshold if 0 < threshold < 65536 else None


def _dropout_words(size):
  """The int32 words that hold a mask's `size` 16-bit uniforms, two a word."""
  return (size + 1) // 2


def _dropout_bits(size):
  """int32 [ceil(size / 2)] uniform bits: a mask's `size` 16-bit uniforms."""
  return tf.random.uniform([_dropout_words(size)], minval=-2**31,
                           maxval=2**31 - 1, dtype=tf.int32)


# Dropout layers of a training step: after each of the four hidden layers.
NUM_DROPOUT_LAYERS = 4


def _compiled_dropout_key():
  """int32 [2]: the seed of one step's dropout masks inside the compiled step,
  drawn by a stateful op, so that it follows the graph's seed (each seed, and
  each worker of a cluster, its own sequence of masks)."""
  return tf.random.uniform([2], minval=-2**31, maxval=2**31 - 1,
                           dtype=tf.int32, name='dropout_key')


def _threefry_dropout_bits(key, size):
  """`_dropout_bits` for each dropout layer, made inside a compiled function:
  int32 [NUM_DROPOUT_LAYERS, ceil(size / 2)], Threefry-2x32 bits of `key`.

  XLA builds Threefry from integer adds, rotations and xors, which it fuses
  into vector loops; TensorFlow's Philox kernels outside the computation took
  about 0.6 ms of an 8.5 ms step, before the computation could start.
  """
  return tf.random.stateless_uniform(
      tf.stack([NUM_DROPOUT_LAYERS, _dropout_words(size)]), seed=key, minval=None,
      maxval=None, dtype=tf.int32, alg='threefry')


def _apply_dropout(inputs, draws, keep_prob, size=None):
  """`inputs` with dropout's mask made from `draws`: `_dropout_bits` of
  inputs' size (int32 [ceil(size / 2)]), or float32 uniforms of inputs' shape
  where `_dropout_threshold(keep_prob)` is None. `size` is tf.size(inputs)
  if the caller has it."""
  threshold = _dropout_threshold(keep_prob)
  if threshold is None:
    return tf.where(draws < keep_prob, inputs * (1.0 / keep_prob),
                    tf.zeros_like(inputs))
  if size is None:
    size = tf.size(inputs)
  uniform16 = tf.reshape(tf.bitcast(draws, tf.uint16), [-1])[:size]
  keep = tf.reshape(uniform16 < threshold, tf.shape(inputs))
  # One multiply by a 0-or-scale mask, forward and backward (a select needed
  # a zeros tensor and a select each way).
  return inputs * tf.where_v2(keep, 65536.0 / threshold, 0.0)


class _VariableLayers(object):
  """The layers of `encode` and `decode`: variables created (or reused) in
  the current variable scope by `dense` and `dense_pair`."""

  def __init__(self, matmul_dtype):
    self._matmul_dtype = matmul_dtype

  def dense(self, inputs, units, name):
    return dense(inputs, units, name, self._matmul_dtype)

  def dense_pair(self, inputs, units, names):
    return dense_pair(inputs, units, names, self._matmul_dtype)


class _TensorLayers(object):
  """The same layers over given weight tensors (inside a compiled function,
  which takes the variables' values as inputs).

  Args:
    weights: {'<scope>/<layer>': (weights, biases)} tensors, as
      `layer_variables` names them.
    scope: ENCODER_SCOPE or DECODER_SCOPE.
    matmul_dtype: see `dense`.
  """

  def __init__(self, weights, scope, matmul_dtype):
    self._weights, self._scope = weights, scope
    self._matmul_dtype = matmul_dtype

  def _layer(self, name):
    return self._weights['%s/%s' % (self._scope, name)]

  def dense(self, inputs, units, name):
    del units  # The weights' shape has it.
    return _affine(inputs, *self._layer(name), self._matmul_dtype)

  def dense_pair(self, inputs, units, names):
    del units
    return _affine_pair(inputs, *(self._layer(name) for name in names),
                        self._matmul_dtype)


def _dropout_by_keep_prob(keep_prob):
  """The dropout of `encode` and `decode`: hidden -> hidden with its mask
  drawn here (`_dropout` checks keep_prob)."""
  return lambda hidden: _dropout(hidden, keep_prob)


def _encoder(images, model_size, layers, dropout):
  """The encoder's ops over `layers` (a _VariableLayers or _TensorLayers),
  `dropout` applied after each hidden layer: (z_mean, z_stddev)."""
  hidden_units = model_size.hidden_units
  hidden = dropout(tf.nn.elu(layers.dense(images, hidden_units, 'fc1')))
  hidden = dropout(tf.nn.tanh(layers.dense(hidden, hidden_units, 'fc2')))
  z_mean, stddev_logits = layers.dense_pair(hidden, model_size.latent_dim,
                                            ('mean', 'stddev'))
  return z_mean, STDDEV_FLOOR + tf.nn.softplus(stddev_logits)


def _decoder(z, model_size, layers, dropout):
  """The decoder's ops over `layers`: logits."""
  hidden_units = model_size.hidden_units
  hidden = dropout(tf.nn.tanh(layers.dense(z, hidden_units, 'fc1')))
  hidden = dropout(tf.nn.elu(layers.dense(hidden, hidden_units, 'fc2')))
  return layers.dense(hidden, model_size.image_pixels, 'output')


def encode(images, model_size, keep_prob=1.0, matmul_dtype=tf.float32):
  """Gaussian MLP encoder q(z | x).

  Args:
    images: float32 [batch, image_pixels] in [0, 1].
    model_size: ModelSize; hidden_units is the width of both hidden layers
      (500 in the original), latent_dim the size of z (20).
    keep_prob: dropout keep probability; 1.0 turns dropout off.
    matmul_dtype: see `dense`.

  Returns:
    z_mean: float32 [batch, latent_dim].
    z_stddev: float32 [batch, latent_dim], at least 1e-6.
  """
  with tf.variable_scope(ENCODER_SCOPE, reuse=tf.AUTO_REUSE):
    return _encoder(images, model_size, _VariableLayers(matmul_dtype),
                    _dropout_by_keep_prob(keep_prob))


def reparameterize(z_mean, z_stddev, noise):
  """z = mean + stddev * noise; all float32 [batch, latent_dim]."""
  return z_mean + z_stddev * noise


def decode(z, model_size, keep_prob=1.0, matmul_dtype=tf.float32):
  """Bernoulli MLP decoder p(x | z).

  Args:
    z: float32 [batch, latent_dim].
    model_size: ModelSize.
    keep_prob: dropout keep probability; 1.0 turns dropout off.
    matmul_dtype: see `dense`.

  Returns:
    logits: float32 [batch, image_pixels]; see `probabilities`.
  """
  with tf.variable_scope(DECODER_SCOPE, reuse=tf.AUTO_REUSE):
    return _decoder(z, model_size, _VariableLayers(matmul_dtype),
                    _dropout_by_keep_prob(keep_prob))


def probabilities(logits):
  """Decoder means, clipped like the original: float32 in [1e-8, 1 - 1e-8]."""
  return tf.clip_by_value(tf.sigmoid(logits), EPSILON, 1.0 - EPSILON)


def inference(images, model_size, keep_prob=1.0, noise=None, seed=None,
              matmul_dtype=tf.float32):
  """Encoder, one reparameterized draw of z, decoder.

  Calls share variables, so a training tower (keep_prob < 1) and deterministic
  evaluation towers (keep_prob = 1) can be built over the same weights.

  Args:
    images: float32 [batch, image_pixels] in [0, 1].
    model_size: ModelSize.
    keep_prob: dropout keep probability (training only).
    noise: float32 [batch, latent_dim] standard normal draws; None draws them
      here with `seed`.
    seed: op seed for the draws when `noise` is None.
    matmul_dtype: see `dense`.

  Returns:
    Inference(z_mean, z_stddev, z, logits).
  """
  z_mean, z_stddev = encode(images, model_size, keep_prob, matmul_dtype)
  if noise is None:
    noise = tf.random.normal(tf.shape(z_mean), seed=seed)
  z = reparameterize(z_mean, z_stddev, noise)
  logits = decode(z, model_size, keep_prob, matmul_dtype)
  return Inference(z_mean, z_stddev, z, logits)


def bernoulli_log_likelihood(images, logits, compiled=False):
  """log p(x | z) of the original, summed over pixels, never NaN or Inf.

  The original computes, with y = clip(sigmoid(logits), 1e-8, 1 - 1e-8),

      sum_i x_i log(1e-8 + y_i) + (1 - x_i) log(1e-8 + 1 - y_i),

  two sigmoids and two logs per pixel, and in float32 it is NaN once the
  sigmoid saturates (1 - y rounds to 0 and a pixel equal to 1 makes
  0 * log(0)). Here the same expression is rewritten around u = exp(-|l|) of
  the logit l: the likelier outcome has probability 1 / (1 + u), the other
  u / (1 + u) (clipped at 1e-8 like the original's y; the upper clip at
  1 - 1e-8 is 1.0 in float32), so

      log(1e-8 + 1 / (1 + u))  = log1p(1e-8 (1 + u)) - log1p(u)
      log(1e-8 + clip(u / (1 + u))) = log(max(u + 1e-8 (1 + u),
                                              2e-8 (1 + u))) - log1p(u),

  and log1p(1e-8 (1 + u)) = 1e-8 (1 + u) to float32 precision. That is one
  exp, one log1p and one log per pixel, finite for every logit, and equal to
  the original wherever the original is finite (closer to its exact value:
  no 1 - y loses digits).

  Args:
    images: float32 [batch, pixels], values in [0, 1] (grey levels allowed).
    logits: float32 [..., batch, pixels], decoder outputs before the sigmoid;
      leading dimensions (draws of z) broadcast against `images`.
    compiled: the same sum by `_compiled_log_likelihood`, one XLA loop with
      cheaper logarithms, for the evaluation of many draws (forward only).

  Returns:
    float32 [..., batch].
  """
  if compiled:
    return _compiled_log_likelihood(images, logits)
  u, terms = _pixel_terms_but_log1p(images, logits, tf.log)
  return tf.reduce_sum(terms - tf.math.log1p(u), axis=-1)


def _pixel_terms_but_log1p(images, logits, log):
  """(u, each pixel's log-likelihood plus log1p(u)), with u = exp(-|logit|)
  and `log` the logarithm to use (see `bernoulli_log_likelihood`)."""
  # -|l| as min(l, -l): a chain of unary ops (Neg, Abs, Exp) would be fused by
  # Grappler into one op of its own, out of an XLA cluster.
  u = tf.exp(tf.minimum(logits, -logits))
  epsilon_mass = EPSILON * (1.0 + u)
  log_likelier = epsilon_mass
  log_unlikelier = log(tf.maximum(u + epsilon_mass, 2.0 * epsilon_mass))
  # The weight of the likelier outcome: x where it is 1 (logit >= 0), else 1 - x.
  weight_likelier = tf.where_v2(logits >= 0.0, images, 1.0 - images)
  return u, log_unlikelier + weight_likelier * (log_likelier - log_unlikelier)


# (1 + u) <= 2, so a product of this many factors stays below float32's
# largest number (2^128).
_MAX_FACTORS_PER_PRODUCT = 126
# log(m) - (m - 1) + (m - 1)^2 / 2 for m - 1 in [sqrt(1/2) - 1, sqrt(2) - 1]:
# the minimax polynomial of Moshier's Cephes logf, highest power first.
_LOG_MANTISSA_POLYNOMIAL = (
    7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
    1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
    3.3333331174e-1)
# log(2) split so that exponent * _LOG2_HIGH is exact in float32.
_LOG2_HIGH, _LOG2_LOW = 0.693359375, -2.12194440e-4


def _log_of_positive_normal(values):
  """log(values) for float32 values that are positive and normal (>= 2^-126),
  within about 1e-7 relative: XLA compiles tf.log to a call per element, this
  to a few vector instructions (exponent from the bits, a polynomial in the
  mantissa). NaN and Inf are not handled: callers pass neither."""
  bits = tf.bitcast(values, tf.int32)
  exponent = tf.bitwise.right_shift(bits, 23) - 127
  # The mantissa as a float in [1, 2), then folded into [sqrt(1/2), sqrt(2)).
  mantissa = tf.bitcast(tf.bitwise.bitwise_or(
      tf.bitwise.bitwise_and(bits, 0x007fffff), 0x3f800000), tf.float32)
  folded = mantissa > math.sqrt(2.0)
  x = tf.where_v2(folded, 0.5 * mantissa, mantissa) - 1.0
  exponent = tf.cast(exponent, tf.float32) + tf.cast(folded, tf.float32)
  polynomial = _LOG_MANTISSA_POLYNOMIAL[0]
  for coefficient in _LOG_MANTISSA_POLYNOMIAL[1:]:
    polynomial = polynomial * x + coefficient
  x_squared = x * x
  return (x + (polynomial * x * x_squared - 0.5 * x_squared
               + exponent * _LOG2_LOW) + exponent * _LOG2_HIGH)


@tf.function(jit_compile=True)
def _compiled_log_likelihood(images, logits):
  """`bernoulli_log_likelihood`'s sum in one XLA computation, with two of its
  three logarithms per pixel gone (the k=1000 NLL computes 7.8 billion):

  - sum_i log1p(u_i) is taken as sum over groups of log(prod_i (1 + u_i)),
    one log per group of up to 126 pixels (each factor is in (1, 2]);
  - log(max(u + 1e-8 (1 + u), 2e-8 (1 + u))), whose argument is >= 2e-8, by
    `_log_of_positive_normal`.

  Both agree with the graph version to float32 rounding (about 1e-7 relative
  per term; tests/test_model.py compares them). NaN logits give NaN, as there.
  """
  pixels = int(logits.shape[-1])
  group = max(size for size in range(1, _MAX_FACTORS_PER_PRODUCT + 1)
              if pixels % size == 0)
  u, terms = _pixel_terms_but_log1p(images, logits, _log_of_positive_normal)
  factors = tf.reshape(1.0 + u, tf.concat(
      [tf.shape(u)[:-1], [pixels // group, group]], axis=0))
  sum_log1p_u = tf.reduce_sum(tf.log(tf.reduce_prod(factors, axis=-1)), axis=-1)
  return tf.reduce_sum(terms, axis=-1) - sum_log1p_u


def gaussian_kl(z_mean, z_stddev):
  """KL(N(mean, stddev^2) || N(0, I)) per example, as the original writes it.

      KL = 0.5 * sum_j (stddev_j^2 + mean_j^2 - log(1e-8 + stddev_j^2) - 1)

  (Kingma & Welling 2014, appendix B.) With t = log(1e-8 + stddev^2),
  stddev^2 - 1 = expm1(t) - 1e-8, so the summand is mean^2 + expm1(t) - t
  up to 1e-8: the result differs from the original's by latent_dim * 5e-9
  nats, far below float32 resolution, and cannot go negative through the
  cancellation stddev^2 - 1 - log(stddev^2) suffers near stddev = 1.

  Args:
    z_mean, z_stddev: float32 [batch, latent_dim].

  Returns:
    float32 [batch], >= 0.
  """
  return tf.reduce_sum(gaussian_kl_per_dimension(z_mean, z_stddev), axis=1)


def gaussian_kl_per_dimension(z_mean, z_stddev):
  """The summands of `gaussian_kl`: float32 [batch, latent_dim], each >= 0
  (how much of the rate each latent dimension carries)."""
  log_variance = tf.log(EPSILON + tf.square(z_stddev))
  return 0.5 * (tf.square(z_mean) + tf.math.expm1(log_variance) - log_variance)


def loss(images, inference_outputs):
  """The negative ELBO and its two terms.

  neg_elbo = -mean_batch(log p(x | z) - KL(q(z | x) || p(z))), one z per example.

  Args:
    images: float32 [batch, 784] in [0, 1].
    inference_outputs: the `Inference` built on `images`.

  Returns:
    LossTerms; the scalar tensors are named `reconstruction`, `kl_divergence`
    and `neg_elbo` in the current name scope.
  """
  log_likelihood = bernoulli_log_likelihood(images, inference_outputs.logits)
  kl_per_example = gaussian_kl(inference_outputs.z_mean,
                               inference_outputs.z_stddev)
  reconstruction = tf.negative(tf.reduce_mean(log_likelihood),
                               name='reconstruction')
  kl_divergence = tf.reduce_mean(kl_per_example, name='kl_divergence')
  neg_elbo = tf.add(reconstruction, kl_divergence, name='neg_elbo')
  return LossTerms(log_likelihood, kl_per_example, reconstruction,
                   kl_divergence, neg_elbo)


def log_likelihood_of_draws(images, z_mean, z_stddev, noise, model_size,
                            matmul_dtype=tf.float32, compiled=False):
  """log p(x | z_k) for K draws z_k = z_mean + z_stddev * noise_k.

  Args:
    images: float32 [batch, pixels] in [0, 1].
    z_mean, z_stddev: float32 [batch, latent_dim], the encoder's outputs.
    noise: float32 [K, batch, latent_dim] standard normal draws.
    model_size: ModelSize.
    matmul_dtype: see `dense`.
    compiled: see `bernoulli_log_likelihood`.

  Returns:
    float32 [K, batch].
  """
  num_draws, batch = tf.shape(noise)[0], tf.shape(images)[0]
  z = reparameterize(z_mean[None], z_stddev[None], noise)
  logits = decode(tf.reshape(z, [-1, model_size.latent_dim]), model_size,
                  matmul_dtype=matmul_dtype)
  # The images broadcast over the draws instead of being tiled K times.
  return bernoulli_log_likelihood(
      images, tf.reshape(logits, [num_draws, batch, model_size.image_pixels]),
      compiled)


def log_importance_weights(images, z_mean, z_stddev, noise, model_size,
                           matmul_dtype=tf.float32, compiled=False):
  """log w_k = log p(x | z_k) + log p(z_k) - log q(z_k | x) for K draws of z.

  log(mean_k w_k) is the importance-weighted bound on log p(x) of Burda et
  al. (2015, eq. 8); it tightens as K grows, and with K = 1 its expectation
  is the ELBO. log p(x | z) is the same clipped Bernoulli likelihood as in
  `loss`, so the two estimates are of the same model.

  Args:
    images, z_mean, z_stddev, noise, model_size, matmul_dtype, compiled: as
      for `log_likelihood_of_draws`.

  Returns:
    float32 [K, batch].
  """
  log_likelihood = log_likelihood_of_draws(images, z_mean, z_stddev, noise,
                                           model_size, matmul_dtype, compiled)
  z = reparameterize(z_mean[None], z_stddev[None], noise)
  log_2pi = math.log(2.0 * math.pi)
  log_prior = -0.5 * tf.reduce_sum(tf.square(z) + log_2pi, axis=-1)
  log_posterior = (-0.5 * tf.reduce_sum(tf.square(noise) + log_2pi, axis=-1)
                   - tf.reduce_sum(tf.log(z_stddev), axis=-1)[None])
  return log_likelihood + log_prior - log_posterior


# The layers of the encoder and of the decoder as `encode` and `decode` create
# them, in that order: (name, fan-in, units), sizes from a ModelSize.
def _layer_shapes(model_size):
  hidden, latent, pixels = (model_size.hidden_units, model_size.latent_dim,
                            model_size.image_pixels)
  return ((ENCODER_SCOPE, (('fc1', pixels, hidden), ('fc2', hidden, hidden),
                           ('mean', hidden, latent), ('stddev', hidden, latent))),
          (DECODER_SCOPE, (('fc1', latent, hidden), ('fc2', hidden, hidden),
                           ('output', hidden, pixels))))


def layer_variables(model_size):
  """Creates (or reuses) the encoder's and decoder's variables, named as
  `encode` and `decode` name them.

  Returns:
    {'<scope>/<layer>': (weights, biases)}, in the order `encode` and `decode`
    create them (so the trainable variables are in the same order too).
  """
  layers = {}
  for scope, shapes in _layer_shapes(model_size):
    with tf.variable_scope(scope, reuse=tf.AUTO_REUSE):
      for name, fan_in, units in shapes:
        layers['%s/%s' % (scope, name)] = _layer_variables(fan_in, units, name)
  return layers


TrainingStep = collections.namedtuple('TrainingStep', [
    'loss_terms',      # LossTerms of the batch.
    'objective',       # float32 []: what the step minimizes.
    'grads_and_vars',  # [(gradient of objective, variable)].
    'gradient_sum',    # float32 []: the sum of every gradient entry.
])


def compiled_training_step(images, model_size, keep_prob=1.0,
                           matmul_dtype=tf.float32, kl_weight=None, noise=None):
  """A training step's loss and gradients as one XLA computation.

  The same network, loss and objective as `inference`, `loss` and
  `kl_weight_at` build from separate ops, compiled whole
  (`tf.function(jit_compile=True)`): XLA fuses the activations, dropout's
  masks, the likelihood and their gradients into loops around the matrix
  products, where TensorFlow's executor runs a kernel for each of about 150
  ops (1.15x to 1.3x faster on 2 CPU cores, bench/throughput.py). Equal to
  the separate ops up to float32 rounding.

  The random numbers follow the graph's seed: a stateful op draws each
  step's dropout key and z's noise outside the computation, and the masks'
  bits are Threefry bits of that key, made inside (`_threefry_dropout_bits`;
  1.04x to 1.06x faster than drawing them outside with TensorFlow's kernels).
  The masks therefore differ from those the separate ops draw for a seed.

  Args:
    images: float32 [batch, image_pixels] in [0, 1].
    model_size: ModelSize.
    keep_prob: dropout keep probability.
    matmul_dtype: see `dense`.
    kl_weight: float32 [] (see `kl_weight_at`), or None to minimize the
      negative ELBO itself.
    noise: float32 [batch, latent_dim] standard normal draws of z; None
      draws them here.

  Returns:
    A TrainingStep over the variables of `layer_variables` (created here if
    the graph has none).
  """
  _check_keep_prob(keep_prob)
  layers = layer_variables(model_size)
  batch = tf.shape(images)[0]
  hidden_size = [batch, model_size.hidden_units]
  # What the computation makes its masks from: a key for Threefry inside, or
  # (where 16-bit uniforms cannot express keep_prob) float32 uniforms.
  bits_inside = keep_prob != 1.0 and _dropout_threshold(keep_prob) is not None
  if bits_inside:
    draws = _compiled_dropout_key()
  elif keep_prob != 1.0:
    draws = [tf.random.uniform(hidden_size)
             for _ in range(NUM_DROPOUT_LAYERS)]
  else:
    draws = []
  if noise is None:
    noise = tf.random.normal([batch, model_size.latent_dim])
  weighted = kl_weight is not None

  @tf.function(jit_compile=True, autograph=False)
  def loss_and_gradients(images, noise, draws, weights, kl_weight):
    if bits_inside:
      draws = tf.unstack(_threefry_dropout_bits(
          draws, tf.shape(images)[0] * model_size.hidden_units))
    # One mask after each hidden layer, in the order the layers come.
    masks = iter(draws)
    dropout = (lambda hidden: _apply_dropout(hidden, next(masks), keep_prob)
               if keep_prob != 1.0 else hidden)
    z_mean, z_stddev = _encoder(
        images, model_size, _TensorLayers(weights, ENCODER_SCOPE, matmul_dtype),
        dropout)
    z = reparameterize(z_mean, z_stddev, noise)
    logits = _decoder(
        z, model_size, _TensorLayers(weights, DECODER_SCOPE, matmul_dtype),
        dropout)
    terms = loss(images, Inference(z_mean, z_stddev, z, logits))
    objective = (terms.reconstruction + kl_weight * terms.kl_divergence
                 if weighted else terms.neg_elbo)
    gradients = tf.gradients(objective, tf.nest.flatten(weights))
    gradient_sum = tf.add_n([tf.reduce_sum(gradient) for gradient in gradients])
    return terms, objective, gradients, gradient_sum

  weights = {name: tuple(variable.value() for variable in pair)
             for name, pair in layers.items()}
  terms, objective, gradients, gradient_sum = loss_and_gradients(
      images, noise, draws, weights,
      kl_weight if weighted else tf.constant(1.0))
  # Named as `loss` names them outside a function.
  terms = terms._replace(**{
      name: tf.identity(getattr(terms, name), name=name)
      for name in ('reconstruction', 'kl_divergence', 'neg_elbo')})
  return TrainingStep(
      terms, tf.identity(objective, name='objective') if weighted else
      terms.neg_elbo, list(zip(gradients, tf.nest.flatten(layers))),
      gradient_sum)


def model_variables():
  """The encoder's and decoder's variables in the current graph: what a
  checkpoint must hold to evaluate the model (optimizer state aside)."""
  return (tf.global_variables(ENCODER_SCOPE + '/')
          + tf.global_variables(DECODER_SCOPE + '/'))


def classify_digits(images):
  """A small MLP digit classifier: 784-512-128-10, ReLU.

  Its 128 last hidden units are the feature space of the Frechet distance of
  sample_quality.py (as the Inception pool features are for FID).

  Args:
    images: float32 [batch, 784] in [0, 1].

  Returns:
    features: float32 [batch, 128]; logits: float32 [batch, 10].
  """
  hidden = images
  with tf.variable_scope(CLASSIFIER_SCOPE, reuse=tf.AUTO_REUSE):
    for layer, units in enumerate(CLASSIFIER_LAYERS):
      hidden = tf.nn.relu(dense(hidden, units, 'fc%d' % (layer + 1)))
    return hidden, dense(hidden, 10, 'logits')


def kl_weight_at(global_step, kl_weight, kl_warmup_steps):
  """The KL term's weight at `global_step` (the step being taken): kl_weight,
  reached linearly from 0 over kl_warmup_steps steps (Bowman et al. 2016).

  Returns:
    float32 [], or None for the unweighted ELBO (kl_weight 1, no warm-up),
    which the caller then minimizes as it is.

  Raises:
    ValueError: kl_weight < 0 or kl_warmup_steps < 0.
  """
  if kl_weight < 0 or kl_warmup_steps < 0:
    raise ValueError('kl_weight and kl_warmup_steps must be >= 0, not %r, %r'
                     % (kl_weight, kl_warmup_steps))
  if kl_weight == 1.0 and not kl_warmup_steps:
    return None
  if not kl_warmup_steps:
    return tf.constant(float(kl_weight), name='kl_weight')
  ramp = tf.minimum(tf.cast(global_step, tf.float32) / float(kl_warmup_steps), 1.0)
  return tf.multiply(float(kl_weight), ramp, name='kl_weight')


def make_optimizer(name, learning_rate):
  """Returns the tf.compat.v1 optimizer called `name` (one of OPTIMIZERS)."""
  if name == 'sgd':
    return tf.train.GradientDescentOptimizer(learning_rate)
  if name == 'adam':
    return tf.train.AdamOptimizer(learning_rate)
  if name == 'adagrad':
    return tf.train.AdagradOptimizer(learning_rate)
  if name == 'rmsprop':
    return tf.train.RMSPropOptimizer(learning_rate)
  if name == 'momentum':
    return tf.train.MomentumOptimizer(learning_rate, momentum=0.9)
  raise ValueError('Unknown optimizer %r; expected one of %s'
                   % (name, ', '.join(OPTIMIZERS)))


def training(objective, optimizer, grads_and_vars=None, gradient_sum=None):
  """Adds the step that minimizes `objective` and increments the global step.

  The update is applied only when the objective and the sum of all gradient
  entries are finite (a NaN or Inf anywhere makes the sum non-finite):
  otherwise the step fails with InvalidArgumentError ("... Tensor had NaN
  values") before any variable changes, so a diverging run never writes a NaN
  into a checkpoint. The sum is a cheaper single pass than the global norm.

  Args:
    objective: float32 [] to minimize.
    optimizer: a tf.compat.v1 optimizer (see `make_optimizer`).
    grads_and_vars: the gradients of `objective` if the caller has them
      (`compiled_training_step`); None computes them here.
    gradient_sum: float32 [], the sum of every entry of grads_and_vars'
      gradients if the caller has it.

  Returns:
    train_op: runs one update.
    global_step: int64 [] variable.
  """
  global_step = tf.train.get_or_create_global_step()
  if grads_and_vars is None:
    grads_and_vars = optimizer.compute_gradients(objective)
  loss_check = tf.debugging.check_numerics(objective, NUMERICS_CHECK_LOSS)
  if gradient_sum is None:
    gradient_sum = tf.add_n([tf.reduce_sum(grad) for grad, _ in grads_and_vars])
  checks = [loss_check, tf.debugging.check_numerics(gradient_sum,
                                                    NUMERICS_CHECK_GRADIENTS)]
  with tf.control_dependencies(checks):
    grads_and_vars = [(tf.identity(grad), var) for grad, var in grads_and_vars]
  train_op = optimizer.apply_gradients(grads_and_vars, global_step=global_step)
  return train_op, global_step
