"""What a checkpoint of this project holds, read without building a graph."""

import tensorflow.compat.v1 as tf

from mnist_vae import model


class CheckpointError(ValueError):
  """A checkpoint is missing, unreadable, or of another model; the message
  names it and says what is wrong."""


def variable_shapes(checkpoint):
  """{variable name: shape} of `checkpoint`; CheckpointError when unreadable."""
  try:
    return dict(tf.train.list_variables(checkpoint))
  except (tf.errors.OpError, ValueError) as e:
    message = getattr(e, 'message', str(e)).splitlines()[0]
    raise CheckpointError('Cannot read checkpoint %s: %s'
                          % (checkpoint, message)) from e


def model_size(checkpoint):
  """The model.ModelSize of the VAE saved in `checkpoint`."""
  shapes = variable_shapes(checkpoint)
  mean_weights = model.ENCODER_SCOPE + '/mean/weights'
  if mean_weights not in shapes:
    raise CheckpointError('%s holds no VAE of this project (it has no %s)'
                          % (checkpoint, mean_weights))
  hidden_units, latent_dim = shapes[mean_weights]
  return model.ModelSize(hidden_units=hidden_units, latent_dim=latent_dim)


def latest(train_dir):
  """(path, global step) of the newest checkpoint in train_dir, or (None, 0)."""
  checkpoint = tf.train.latest_checkpoint(train_dir)
  if checkpoint is None:
    return None, 0
  return checkpoint, step_of(checkpoint)


def step_of(checkpoint):
  """The global step saved in `checkpoint`."""
  return int(tf.train.load_variable(checkpoint, 'global_step'))


def restore(session, checkpoint, saver=None):
  """Restores `checkpoint` into the model variables of session's graph (or
  with `saver`, built in that graph over other variables).

  Raises:
    CheckpointError: it cannot be read (missing, deleted, damaged).
  """
  with session.graph.as_default():  # Restoring builds ops in the graph.
    saver = saver or tf.train.Saver(model.model_variables())
    try:
      saver.restore(session, checkpoint)
    except (tf.errors.OpError, ValueError) as e:
      message = getattr(e, 'message', str(e)).splitlines()[0]
      raise CheckpointError('Cannot restore checkpoint %s: %s'
                            % (checkpoint, message)) from e


def check_matches(checkpoint, variables, optimizer_name):
  """Raises CheckpointError unless `checkpoint` restores into `variables`.

  Args:
    checkpoint: path of the checkpoint to resume.
    variables: the graph's global variables (model, global step and the
      optimizer's slots).
    optimizer_name: the --optimizer the graph was built with, for the message.
  """
  saved = variable_shapes(checkpoint)
  trained_with = trained_optimizer(saved)
  if trained_with != optimizer_name:
    raise CheckpointError(
        'Checkpoint %s was trained with --optimizer=%s; its optimizer state '
        'differs from what --optimizer=%s needs. Resume with --optimizer=%s, '
        'or use another --train_dir.' % (checkpoint, trained_with,
                                         optimizer_name, trained_with))
  for variable in variables:
    name = variable.op.name
    shape = variable.shape.as_list()
    if name in saved and saved[name] != shape:
      raise CheckpointError(
          'Checkpoint %s holds %s with shape %s, but --latent_dim/'
          '--hidden_units ask for %s. Pass the flags it was trained with, or '
          'use another --train_dir.' % (checkpoint, name, saved[name], shape))
    if name not in saved:
      raise CheckpointError('Checkpoint %s has no variable %s: it was not '
                            'written by this model. Use another --train_dir.'
                            % (checkpoint, name))


# Variable-name endings of each optimizer's state (slots and accumulators).
_OPTIMIZER_STATE = {
    'adam': ('/Adam', '/Adam_1', 'beta1_power', 'beta2_power'),
    'adagrad': ('/Adagrad',),
    'rmsprop': ('/RMSProp', '/RMSProp_1'),
    'momentum': ('/Momentum',),
}


def trained_optimizer(saved_shapes):
  """The name (model.OPTIMIZERS) of the optimizer whose state a checkpoint's
  variables hold; 'sgd' when they hold none."""
  for name, endings in _OPTIMIZER_STATE.items():
    if any(variable.endswith(ending) for variable in saved_shapes
           for ending in endings):
      return name
  return 'sgd'
