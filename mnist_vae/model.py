"""Stage 3 of the data flow: the graph of the variational autoencoder.

Builds graphs only; it reads no flags and touches no files. Every function
takes the network's description (an architectures.Network) and derives its
layers from it; the functions follow the classic TF1 tutorial contract:

  inference()  encoder -> reparameterized z -> decoder logits
  loss()       per-example and mean reconstruction, KL and negative ELBO
  training()   the optimizer step and the global step, refusing non-finite
               updates
  log_importance_weights()  the terms of the importance-weighted bound

The training step itself is compiled into one XLA computation by
fast_step.py over the same forward pass (`forward_encoder`, `forward_decoder`
with the layers' weights given as tensors).
"""

import collections
import math

import tensorflow.compat.v1 as tf

from mnist_vae import architectures
from mnist_vae.architectures import DECODER_SCOPE
from mnist_vae.architectures import ENCODER_SCOPE

# Outputs of the original's decoder are clipped to [EPSILON, 1 - EPSILON] and
# EPSILON is added inside each log (the 'clipped' likelihood and the KL of the
# 'softplus' scale).
EPSILON = 1e-8
STDDEV_FLOOR = 1e-6
# --matmul_precision: the dtype dense layers multiply in.
MATMUL_DTYPES = {'float32': tf.float32, 'bfloat16': tf.bfloat16}
# Messages of the numerics checks in `training`, for callers to recognise.
NUMERICS_CHECK_LOSS = 'non-finite loss'
NUMERICS_CHECK_GRADIENTS = 'non-finite gradients'

_ACTIVATIONS = {'elu': tf.nn.elu, 'tanh': tf.nn.tanh, 'relu': tf.nn.relu}

Inference = collections.namedtuple('Inference', ['z_mean', 'z_stddev', 'z', 'logits'])
LossTerms = collections.namedtuple(
    'LossTerms',
    [
        'log_likelihood',  # float32 [batch]: log p(x | z), summed over pixels.
        'kl_per_example',  # float32 [batch]: KL(q(z | x) || p(z)).
        'reconstruction',  # float32 []: mean over the batch of -log_likelihood.
        'kl_divergence',  # float32 []: mean over the batch of kl.
        'neg_elbo',  # float32 []: reconstruction + kl_divergence.
    ])


def _initializer(network, parameter_layer):
  """The initializer of a layer's weights (see architectures.INITIALIZERS)."""
  shape = parameter_layer.weights_shape
  if network.initializer == 'tf1_variance_scaling':
    # TF1 contrib's variance_scaling_initializer() (factor 2, fan-in,
    # truncated normal) drew with stddev sqrt(1.3 * 2 / fan_in); the 1.3
    # compensates for the truncation at two standard deviations.
    return tf.truncated_normal_initializer(stddev=math.sqrt(1.3 * 2.0 / math.prod(shape[:-1])))
  receptive = math.prod(shape[:-2])
  fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
  limit = math.sqrt(6.0 / (fan_in + fan_out))
  return tf.random_uniform_initializer(-limit, limit)


def create_variables(network, output_bias=None):
  """Creates (or reuses) the encoder's and decoder's variables.

  Args:
    network: architectures.Network.
    output_bias: float [784], the initial biases of the decoder's last layer
      for a network whose output_bias is 'train_mean_logit' (see
      `train_mean_logit`); None starts them at zero.

  Returns:
    {'<scope>/<layer>': (weights, biases)}, in the order the forward pass
    applies the layers (so the trainable variables are in that order too).
  """
  layers = {}
  parameter_layers = architectures.parameter_layers(network)
  for scope in (ENCODER_SCOPE, DECODER_SCOPE):
    with tf.variable_scope(scope, reuse=tf.AUTO_REUSE):
      for parameter_layer in parameter_layers:
        if parameter_layer.scope != scope:
          continue
        initial_bias = (output_bias if parameter_layer is parameter_layers[-1] else None)
        layers['%s/%s' %
               (scope, parameter_layer.name)] = _layer_variables(network, parameter_layer,
                                                                 initial_bias)
  return layers


def _layer_variables(network, parameter_layer, initial_bias=None):
  """(weights, biases) of one layer, in a variable scope of its name."""
  with tf.variable_scope(parameter_layer.name):
    weights = tf.get_variable(
        'weights',
        list(parameter_layer.weights_shape),
        initializer=_initializer(network, parameter_layer))
    biases = tf.get_variable(
        'biases',
        list(parameter_layer.biases_shape),
        initializer=tf.zeros_initializer()
        if initial_bias is None else tf.constant_initializer(initial_bias))
  return weights, biases


def train_mean_logit(mean_pixels):
  """The IWAE code's initial output biases: the logit of the training
  images' mean pixels clipped to [0.001, 0.999]. float [784] -> float [784]."""
  import numpy as np  # Only the trainer calls this, with NumPy data.
  clipped = np.clip(mean_pixels, *architectures.TRAIN_MEAN_CLIP)
  return np.log(clipped / (1.0 - clipped)).astype(np.float32)


def _affine(inputs, weights, biases, matmul_dtype):
  if matmul_dtype == tf.float32:
    products = tf.matmul(inputs, weights)
  else:
    products = tf.cast(
        tf.matmul(tf.cast(inputs, matmul_dtype), tf.cast(weights, matmul_dtype)), tf.float32)
  return tf.nn.bias_add(products, biases)


def _convolve(inputs, layer, weights, biases):
  """`layer` (an architectures.Conv) over [batch, h, w, c] inputs."""
  strides = [1, layer.stride, layer.stride, 1]
  if not layer.transpose:
    return tf.nn.bias_add(tf.nn.conv2d(inputs, weights, strides, layer.padding), biases)
  side = architectures._conv_output_side(int(inputs.shape[1]), layer)
  output_shape = tf.stack([tf.shape(inputs)[0], side, side, layer.filters])
  return tf.nn.bias_add(
      tf.nn.conv2d_transpose(inputs, weights, output_shape, strides, layer.padding), biases)


class LayerOps(object):
  """The layers' arithmetic over given weight tensors, as inside a compiled
  function (`_VariableOps` is the same over the graph's variables).

  Args:
    scope: ENCODER_SCOPE or DECODER_SCOPE.
    weights: {'<scope>/<layer>': (weights, biases)} tensors, as
      `create_variables` names them.
    matmul_dtype: tf.float32, or tf.bfloat16 to multiply dense layers in
      bfloat16 (inputs and weights rounded to 8 bits of mantissa, float32
      accumulation and result); the variables stay float32 either way.
  """

  def __init__(self, scope, weights, matmul_dtype=tf.float32):
    self._scope, self._weights, self._matmul_dtype = scope, weights, matmul_dtype

  def _get(self, name):
    return self._weights['%s/%s' % (self._scope, name)]

  def apply(self, layer, inputs):
    """`layer`'s product (or convolution) and biases, before its activation."""
    weights, biases = self._get(layer.name)
    if isinstance(layer, architectures.Dense):
      return _affine(inputs, weights, biases, self._matmul_dtype)
    return _convolve(inputs, layer, weights, biases)

  def head(self, inputs, names):
    """The head's two dense layers of the same input as one product of twice
    the width (cheaper forward and backward than two narrow ones); each keeps
    its own variables. Returns their two outputs."""
    (first_weights, first_biases), (second_weights, second_biases) = (
        self._get(name) for name in names)
    both = _affine(inputs, tf.concat([first_weights, second_weights], axis=1),
                   tf.concat([first_biases, second_biases], axis=0), self._matmul_dtype)
    return tf.split(both, 2, axis=1)


def _no_dropout(hidden):
  return hidden


def _apply_layers(inputs, layers, ops, dropout):
  hidden = inputs
  for layer in layers:
    if isinstance(layer, architectures.Reshape):
      shape = list(layer.shape)
      if shape == [-1]:  # Flattened: the static size of an example.
        shape = [math.prod(hidden.shape.as_list()[1:])]
      hidden = tf.reshape(hidden, [-1] + shape)
      continue
    hidden = ops.apply(layer, hidden)
    if layer.activation is not None:
      hidden = _ACTIVATIONS[layer.activation](hidden)
    if getattr(layer, 'dropout', False):
      hidden = dropout(hidden)
  return hidden


def stddev_of(network, scale_output):
  """The posterior's standard deviation from the head's second output."""
  if network.scale == 'softplus':
    return STDDEV_FLOOR + tf.nn.softplus(scale_output)
  if network.scale == 'log_variance':
    return tf.exp(0.5 * scale_output)
  return tf.exp(scale_output)


def forward_encoder(images, network, ops, dropout=_no_dropout):
  """The encoder's ops over `ops` (a LayerOps), `dropout` (hidden -> hidden)
  applied after each layer marked dropout: (z_mean, z_stddev)."""
  hidden = _apply_layers(images, network.encoder, ops, dropout)
  z_mean, scale_output = ops.head(hidden, network.head)
  return z_mean, stddev_of(network, scale_output)


def forward_decoder(z, network, ops, dropout=_no_dropout):
  """The decoder's ops over `ops`: logits."""
  return _apply_layers(z, network.decoder, ops, dropout)


def encode(images, network, dropout=_no_dropout, matmul_dtype=tf.float32):
  """Gaussian encoder q(z | x).

  Args:
    images: float32 [batch, 784] in [0, 1].
    network: architectures.Network.
    dropout: hidden -> hidden, applied where the network has dropout (while
      training only; fast_step.dropout makes one); the default is none.
    matmul_dtype: see LayerOps.

  Returns:
    z_mean: float32 [batch, latent_dim].
    z_stddev: float32 [batch, latent_dim], positive.
  """
  with tf.variable_scope(ENCODER_SCOPE, reuse=tf.AUTO_REUSE):
    return forward_encoder(images, network, _VariableOps(network, ENCODER_SCOPE, matmul_dtype),
                           dropout)


def reparameterize(z_mean, z_stddev, noise):
  """z = mean + stddev * noise; all float32 [batch, latent_dim]."""
  return z_mean + z_stddev * noise


def decode(z, network, dropout=_no_dropout, matmul_dtype=tf.float32):
  """Bernoulli decoder p(x | z).

  Args:
    z: float32 [batch, latent_dim].
    network: architectures.Network.
    dropout, matmul_dtype: as for `encode`.

  Returns:
    logits: float32 [batch, 784]; see `probabilities`.
  """
  with tf.variable_scope(DECODER_SCOPE, reuse=tf.AUTO_REUSE):
    return forward_decoder(z, network, _VariableOps(network, DECODER_SCOPE, matmul_dtype), dropout)


class _VariableOps(LayerOps):
  """LayerOps over the variables, each created (or reused) in the current
  variable scope the first time a layer is applied (so that a graph built by
  `encode` alone holds only the encoder's)."""

  def __init__(self, network, scope, matmul_dtype):
    super().__init__(scope, None, matmul_dtype)
    self._layers = {
        layer.name: layer
        for layer in architectures.parameter_layers(network)
        if layer.scope == scope
    }
    self._network = network

  def _get(self, name):
    return _layer_variables(self._network, self._layers[name])


def probabilities(logits):
  """Decoder means, clipped like the original: float32 in [1e-8, 1 - 1e-8]."""
  return tf.clip_by_value(tf.sigmoid(logits), EPSILON, 1.0 - EPSILON)


def inference(images, network, dropout=_no_dropout, noise=None, seed=None, matmul_dtype=tf.float32):
  """Encoder, one reparameterized draw of z, decoder.

  Calls share variables, so a training tower and deterministic evaluation
  towers can be built over the same weights.

  Args:
    images: float32 [batch, 784] in [0, 1].
    network: architectures.Network.
    dropout: see `encode`.
    noise: float32 [batch, latent_dim] standard normal draws; None draws them
      here with `seed`.
    seed: op seed for the draws when `noise` is None.
    matmul_dtype: see LayerOps.

  Returns:
    Inference(z_mean, z_stddev, z, logits).
  """
  z_mean, z_stddev = encode(images, network, dropout, matmul_dtype)
  if noise is None:
    noise = tf.random.normal(tf.shape(z_mean), seed=seed)
  z = reparameterize(z_mean, z_stddev, noise)
  logits = decode(z, network, dropout, matmul_dtype)
  return Inference(z_mean, z_stddev, z, logits)


def bernoulli_log_likelihood(images, logits, network):
  """log p(x | z) summed over pixels, never NaN or Inf for finite logits.

  For the 'exact' likelihood it is sum_i x_i l_i - softplus(l_i) of the
  logits l, written as TensorFlow's sigmoid cross-entropy is.

  For the original's 'clipped' one, with y = clip(sigmoid(l), 1e-8, 1 - 1e-8),

      sum_i x_i log(1e-8 + y_i) + (1 - x_i) log(1e-8 + 1 - y_i),

  two sigmoids and two logs per pixel, and in float32 it is NaN once the
  sigmoid saturates (1 - y rounds to 0 and a pixel equal to 1 makes
  0 * log(0)). Here the same expression is rewritten around u = exp(-|l|):
  the likelier outcome has probability 1 / (1 + u), the other u / (1 + u)
  (clipped at 1e-8 like the original's y; the upper clip at 1 - 1e-8 is 1.0
  in float32), so

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
    network: architectures.Network (its likelihood).

  Returns:
    float32 [..., batch].
  """
  u, terms = pixel_terms_but_log1p(images, logits, network.likelihood, tf.log)
  return tf.reduce_sum(terms - tf.math.log1p(u), axis=-1)


def pixel_terms_but_log1p(images, logits, likelihood, log):
  """(u, each pixel's log-likelihood plus log1p(u)), with u = exp(-|logit|),
  for `likelihood` ('clipped' or 'exact'; see `bernoulli_log_likelihood`),
  and `log` the logarithm to use."""
  # -|l| as min(l, -l): a chain of unary ops (Neg, Abs, Exp) would be fused by
  # Grappler into one op of its own, out of an XLA cluster.
  u = tf.exp(tf.minimum(logits, -logits))
  if likelihood == 'exact':
    # x l - softplus(l) = x l - max(l, 0) - log1p(u).
    return u, images * logits - tf.maximum(logits, 0.0)
  epsilon_mass = EPSILON * (1.0 + u)
  log_likelier = epsilon_mass
  log_unlikelier = log(tf.maximum(u + epsilon_mass, 2.0 * epsilon_mass))
  # The weight of the likelier outcome: x where it is 1 (logit >= 0), else 1 - x.
  weight_likelier = tf.where_v2(logits >= 0.0, images, 1.0 - images)
  return u, log_unlikelier + weight_likelier * (log_likelier - log_unlikelier)


def gaussian_kl(z_mean, z_stddev, network):
  """KL(N(mean, stddev^2) || N(0, I)) per example.

      KL = 0.5 * sum_j (stddev_j^2 + mean_j^2 - log(stddev_j^2) - 1)

  (Kingma & Welling 2014, appendix B.) The original writes log(1e-8 +
  stddev^2), which this keeps for its 'softplus' scale; with t that
  logarithm, stddev^2 - 1 = expm1(t) - 1e-8, so the summand is mean^2 +
  expm1(t) - t up to 1e-8: the result differs from the original's by
  latent_dim * 5e-9 nats, far below float32 resolution, and cannot go
  negative through the cancellation stddev^2 - 1 - log(stddev^2) suffers near
  stddev = 1. The exponential scales take t = 2 log(stddev) exactly (a
  posterior far narrower than 1e-4 is then not capped).

  Args:
    z_mean, z_stddev: float32 [batch, latent_dim].
    network: architectures.Network (its scale).

  Returns:
    float32 [batch], >= 0.
  """
  return tf.reduce_sum(gaussian_kl_per_dimension(z_mean, z_stddev, network), axis=1)


def gaussian_kl_per_dimension(z_mean, z_stddev, network):
  """The summands of `gaussian_kl`: float32 [batch, latent_dim], each >= 0
  (how much of the rate each latent dimension carries)."""
  if network.scale == 'softplus':
    log_variance = tf.log(EPSILON + tf.square(z_stddev))
  else:
    log_variance = 2.0 * tf.log(z_stddev)
  return 0.5 * (tf.square(z_mean) + tf.math.expm1(log_variance) - log_variance)


def loss(images, inference_outputs, network):
  """The negative ELBO and its two terms.

  neg_elbo = -mean_batch(log p(x | z) - KL(q(z | x) || p(z))), one z per example.

  Args:
    images: float32 [batch, 784] in [0, 1].
    inference_outputs: the `Inference` built on `images`.
    network: architectures.Network.

  Returns:
    LossTerms; the scalar tensors are named `reconstruction`, `kl_divergence`
    and `neg_elbo` in the current name scope.
  """
  log_likelihood = bernoulli_log_likelihood(images, inference_outputs.logits, network)
  kl_per_example = gaussian_kl(inference_outputs.z_mean, inference_outputs.z_stddev, network)
  reconstruction = tf.negative(tf.reduce_mean(log_likelihood), name='reconstruction')
  kl_divergence = tf.reduce_mean(kl_per_example, name='kl_divergence')
  neg_elbo = tf.add(reconstruction, kl_divergence, name='neg_elbo')
  return LossTerms(log_likelihood, kl_per_example, reconstruction, kl_divergence, neg_elbo)


# --train_bound: what training with K > 1 draws of z per image maximizes.
#   iwae  the importance-weighted bound log mean_k w_k (Burda et al. 2015)
#   elbo  the ELBO with its reconstruction term averaged over the K draws
BOUNDS = ('iwae', 'elbo')


def repeat_for_draws(images, iw_samples):
  """[K * batch, ...]: the batch repeated K times, draw k of image i in row
  k * batch + i (so that a [K * batch] result reshapes to [K, batch])."""
  if iw_samples == 1:
    return images
  return tf.tile(images, [iw_samples] + [1] * (len(images.shape) - 1))


def importance_weighted_bound(log_likelihood, z_mean, z_stddev, noise, iw_samples):
  """log mean_k w_k per image, w_k = p(x, z_k) / q(z_k | x), from the rows of
  a batch repeated by `repeat_for_draws`.

  Args:
    log_likelihood: float32 [K * batch], log p(x | z) of each row.
    z_mean, z_stddev, noise: float32 [K * batch, latent_dim], each row's
      posterior and the standard normal draw that made its z.
    iw_samples: K.

  Returns:
    float32 [batch].
  """
  log_prior, log_posterior = log_prior_and_posterior(z_mean, z_stddev, noise[None])
  log_weights = tf.reshape(log_likelihood + log_prior[0] - log_posterior[0], [iw_samples, -1])
  return tf.reduce_logsumexp(log_weights, axis=0) - math.log(iw_samples)


def log_likelihood_of_draws(images,
                            z_mean,
                            z_stddev,
                            noise,
                            network,
                            matmul_dtype=tf.float32,
                            log_likelihood_fn=None):
  """log p(x | z_k) for K draws z_k = z_mean + z_stddev * noise_k.

  Args:
    images: float32 [batch, 784] in [0, 1].
    z_mean, z_stddev: float32 [batch, latent_dim], the encoder's outputs.
    noise: float32 [K, batch, latent_dim] standard normal draws.
    network: architectures.Network.
    matmul_dtype: see LayerOps.
    log_likelihood_fn: (images, logits [K, batch, 784]) -> [K, batch], the
      same sum as `bernoulli_log_likelihood` (fast_step's compiled one); None
      takes that one.

  Returns:
    float32 [K, batch].
  """
  num_draws, batch = tf.shape(noise)[0], tf.shape(images)[0]
  z = reparameterize(z_mean[None], z_stddev[None], noise)
  logits = decode(tf.reshape(z, [-1, network.latent_dim]), network, matmul_dtype=matmul_dtype)
  logits = tf.reshape(logits, [num_draws, batch, architectures.IMAGE_PIXELS])
  # The images broadcast over the draws instead of being tiled K times.
  if log_likelihood_fn is None:
    return bernoulli_log_likelihood(images, logits, network)
  return log_likelihood_fn(images, logits)


def log_importance_weights(images,
                           z_mean,
                           z_stddev,
                           noise,
                           network,
                           matmul_dtype=tf.float32,
                           log_likelihood_fn=None):
  """log w_k = log p(x | z_k) + log p(z_k) - log q(z_k | x) for K draws of z.

  log(mean_k w_k) is the importance-weighted bound on log p(x) of Burda et
  al. (2015, eq. 8); it tightens as K grows, and with K = 1 its expectation
  is the ELBO. log p(x | z) is the same likelihood as in `loss`, so the two
  estimates are of the same model.

  Args:
    images, z_mean, z_stddev, noise, network, matmul_dtype, log_likelihood_fn:
      as for `log_likelihood_of_draws`.

  Returns:
    float32 [K, batch].
  """
  log_likelihood = log_likelihood_of_draws(images, z_mean, z_stddev, noise, network, matmul_dtype,
                                           log_likelihood_fn)
  log_prior, log_posterior = log_prior_and_posterior(z_mean, z_stddev, noise)
  return log_likelihood + log_prior - log_posterior


# --train_kl: how a training step's ELBO estimates its KL term.
#   closed_form  KL(q(z | x) || p(z)) of the two Gaussians, exactly: the
#                expectation itself, so its gradient has no noise of its own
#   sampled      log q(z | x) - log p(z) at the step's draw of z, as Burda et
#                al.'s code trains its VAE (the same expectation, noisier)
KL_ESTIMATES = ('closed_form', 'sampled')


def sampled_kl(z_mean, z_stddev, noise):
  """log q(z | x) - log p(z) at z = z_mean + z_stddev * noise, whose
  expectation over the noise is the closed-form KL: float32 [rows] from
  [rows, latent_dim] each."""
  log_prior, log_posterior = log_prior_and_posterior(z_mean, z_stddev, noise[None])
  return log_posterior[0] - log_prior[0]


def objective_is_neg_elbo(weighted, iw_samples, bound, train_kl):
  """Whether `training_objective` is the negative ELBO itself (`weighted`:
  whether it has a KL weight), so that a step need not report both."""
  return not weighted and not (iw_samples > 1 and bound == 'iwae') and train_kl == 'closed_form'


def training_objective(terms, z_mean, z_stddev, noise, kl_weight, iw_samples, bound, train_kl):
  """The scalar a training step minimizes.

  Args:
    terms: the LossTerms of the step's rows (the batch repeated K times by
      `repeat_for_draws` when iw_samples K > 1).
    z_mean, z_stddev, noise: float32 [rows, latent_dim], each row's posterior
      and the standard normal draw that made its z.
    kl_weight: float32 [] weight of the KL term, or None for the ELBO itself.
    iw_samples, bound: K and one of BOUNDS; with K > 1 and 'iwae', minus the
      importance-weighted bound (which has no KL term to weigh or estimate).
    train_kl: one of KL_ESTIMATES.

  Returns:
    float32 []; `terms.neg_elbo` itself for the closed-form KL unweighted.
  """
  if iw_samples > 1 and bound == 'iwae':
    return -tf.reduce_mean(
        importance_weighted_bound(terms.log_likelihood, z_mean, z_stddev, noise, iw_samples))
  if train_kl == 'closed_form':
    kl_divergence = terms.kl_divergence
    if kl_weight is None:
      return terms.neg_elbo
  else:
    kl_divergence = tf.reduce_mean(sampled_kl(z_mean, z_stddev, noise))
  if kl_weight is None:
    return terms.reconstruction + kl_divergence
  return terms.reconstruction + kl_weight * kl_divergence


def log_prior_and_posterior(z_mean, z_stddev, noise):
  """log p(z_k) and log q(z_k | x) for z_k = z_mean + z_stddev * noise_k:
  float32 [K, batch] each, from [batch, latent_dim] and noise [K, batch,
  latent_dim]."""
  z = reparameterize(z_mean[None], z_stddev[None], noise)
  log_2pi = math.log(2.0 * math.pi)
  log_prior = -0.5 * tf.reduce_sum(tf.square(z) + log_2pi, axis=-1)
  log_posterior = (-0.5 * tf.reduce_sum(tf.square(noise) + log_2pi, axis=-1)
                   - tf.reduce_sum(tf.log(z_stddev), axis=-1)[None])
  return log_prior, log_posterior


def model_variables():
  """The encoder's and decoder's variables in the current graph: what a
  checkpoint must hold to evaluate the model (optimizer state aside)."""
  return tf.global_variables(ENCODER_SCOPE + '/') + tf.global_variables(DECODER_SCOPE + '/')


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
    raise ValueError('kl_weight and kl_warmup_steps must be >= 0, not %r, %r' %
                     (kl_weight, kl_warmup_steps))
  if kl_weight == 1.0 and not kl_warmup_steps:
    return None
  if not kl_warmup_steps:
    return tf.constant(float(kl_weight), name='kl_weight')
  ramp = tf.minimum(tf.cast(global_step, tf.float32) / float(kl_warmup_steps), 1.0)
  return tf.multiply(float(kl_weight), ramp, name='kl_weight')


def training(objective, optimizer, grads_and_vars=None, gradient_sum=None):
  """Adds the step that minimizes `objective` and increments the global step.

  The update is applied only when the objective and the sum of all gradient
  entries are finite (a NaN or Inf anywhere makes the sum non-finite):
  otherwise the step fails with InvalidArgumentError ("... Tensor had NaN
  values") before any variable changes, so a diverging run never writes a NaN
  into a checkpoint. The sum is a cheaper single pass than the global norm.

  Args:
    objective: float32 [] to minimize.
    optimizer: a tf.compat.v1 optimizer.
    grads_and_vars: the gradients of `objective` if the caller has them
      (fast_step.compiled_training_step); None computes them here.
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
  checks = [loss_check, tf.debugging.check_numerics(gradient_sum, NUMERICS_CHECK_GRADIENTS)]
  with tf.control_dependencies(checks):
    grads_and_vars = [(tf.identity(grad), var) for grad, var in grads_and_vars]
  train_op = optimizer.apply_gradients(grads_and_vars, global_step=global_step)
  return train_op, global_step
