"""The same VAE step in JAX (`jax.jit` + optax Adam), a peer for the bench.

Optional: it needs the bench extra (`pip install -e '.[bench]'`, which
installs jax[cpu] and optax); bench/throughput.py leaves it out with a note
when JAX does not import. The step is the fast TF2 peer's: the batch gathered
from the training images kept on the device as uint8, one 500x40 product for
the mean and stddev, dropout keeping 0.9, the original loss formula, Adam;
`steps_per_call` steps run in one compiled `lax.fori_loop`. With
network='iwae_mlp', the IWAE paper's network and step instead.

  python bench/jax_peer.py --mnist_dir ../shared/mnist --steps 2000
"""

import numpy as np

import peer_data  # bench/peer_data.py, beside this script.

# What the peer's network can be: the original MLP, or the IWAE paper's
# (tanh everywhere, stddev exp(.), the exact Bernoulli likelihood of pixels
# binarized afresh each step, no dropout, Adam with the IWAE code's beta1 and
# epsilon).
NETWORKS = ('mlp', 'iwae_mlp')


def make_step(train_images_uint8,
              batch_size=128,
              hidden_units=None,
              latent_dim=None,
              keep_prob=0.9,
              learning_rate=1e-3,
              seed=0,
              steps_per_call=1,
              network='mlp'):
  """Returns step(): runs `steps_per_call` Adam steps, returns the last loss
  (a JAX array; float() waits for it)."""
  import jax
  import jax.numpy as jnp
  import optax

  iwae = network == 'iwae_mlp'
  hidden_units = hidden_units or (200 if iwae else 500)
  latent_dim = latent_dim or (50 if iwae else 20)
  if iwae:
    keep_prob = 1.0
  rng = np.random.RandomState(seed)
  sizes = [(784, hidden_units), (hidden_units, hidden_units), (hidden_units, 2 * latent_dim),
           (latent_dim, hidden_units), (hidden_units, hidden_units), (hidden_units, 784)]
  params = [(jnp.asarray(
      np.clip(rng.standard_normal(shape), -2, 2) * np.sqrt(2.6 / shape[0]),
      jnp.float32), jnp.zeros([shape[1]], jnp.float32)) for shape in sizes]
  data = jnp.asarray(train_images_uint8)
  optimizer = (
      optax.adam(learning_rate, b1=0.99, b2=0.999, eps=5e-6) if iwae else optax.adam(learning_rate))
  first, second = (jnp.tanh, jnp.tanh) if iwae else (jax.nn.elu, jnp.tanh)

  def dropout(key, h):
    if keep_prob == 1.0:
      return h
    return jnp.where(jax.random.bernoulli(key, keep_prob, h.shape), h / keep_prob, 0.0)

  def loss_fn(params, x, keys):
    (w1, b1), (w2, b2), (w3, b3), (w4, b4), (w5, b5), (w6, b6) = params
    h = dropout(keys[0], first(x @ w1 + b1))
    h = dropout(keys[1], second(h @ w2 + b2))
    mean, pre_stddev = jnp.split(h @ w3 + b3, 2, axis=1)
    stddev = jnp.exp(pre_stddev) if iwae else 1e-6 + jax.nn.softplus(pre_stddev)
    noise = jax.random.normal(keys[2], mean.shape)
    z = mean + stddev * noise
    h = dropout(keys[3], second(z @ w4 + b4))
    h = dropout(keys[4], first(h @ w5 + b5))
    logits = h @ w6 + b6
    if iwae:
      log_likelihood = jnp.sum(x * logits - jax.nn.softplus(logits), axis=1)
      # The preset's KL (--train_kl=sampled): log q(z|x) - log p(z) at the draw.
      kl = jnp.sum(0.5 * z**2 - 0.5 * noise**2 - pre_stddev, axis=1)
    else:
      y = jnp.clip(jax.nn.sigmoid(logits), 1e-8, 1 - 1e-8)
      log_likelihood = jnp.sum(x * jnp.log(1e-8 + y) + (1 - x) * jnp.log(1e-8 + 1 - y), axis=1)
      kl = 0.5 * jnp.sum(stddev**2 + mean**2 - jnp.log(1e-8 + stddev**2) - 1, axis=1)
    return -jnp.mean(log_likelihood - kl)

  def one_step(_, carry):
    params, opt_state, key, _ = carry
    key, batch_key, binarize_key, *keys = jax.random.split(key, 8)
    index = jax.random.randint(batch_key, [batch_size], 0, data.shape[0])
    x = data[index].astype(jnp.float32) * (1.0 / 255.0)
    if iwae:
      x = (jax.random.uniform(binarize_key, x.shape) < x).astype(jnp.float32)
    loss, grads = jax.value_and_grad(loss_fn)(params, x, keys)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, key, loss

  @jax.jit
  def run(carry):
    return jax.lax.fori_loop(0, steps_per_call, one_step, carry)

  state = [(params, optimizer.init(params), jax.random.PRNGKey(seed), jnp.float32(0))]

  def step():
    state[0] = run(state[0])
    return state[0][3]

  return step


if __name__ == '__main__':
  peer_data.run_as_program(make_step, __doc__.splitlines()[0])
