"""The classic TF1 variational autoencoder on MNIST, on tf.compat.v1.

Use a trained model from Python (trained_model.py):

  import mnist_vae
  vae = mnist_vae.load('runs/upstream')   # a run, a checkpoint or an export
  z_mean, z_stddev = vae.encode(images)

The data flow, one module a stage:

  data_prep/         IDX files -> TFRecords (records.py: file names, schema)
  input_pipeline.py  TFRecords -> tf.data batches of float32 [batch, 784]
  architectures.py   each network described once, as data
  model.py           the graph of a described network: encoder, decoder, losses
  fast_step.py       the training step compiled (and several steps in one call)
  training.py        the training graph and session that train.py runs
  training_loop.py   the loop and what it does between steps
  evaluation.py      the negative ELBO and NLL of a whole split
  aggregate_posterior.py  q(z) against the prior: ELBO surgery, its Gaussian fit
  images.py          image grids, PNGs and image summaries
  trained_model.py   a trained model to call from Python (mnist_vae.load)

Entry points (each also a console script): train.py (vae-train),
evaluate.py (vae-evaluate), export.py (vae-export: a SavedModel),
generate.py (vae-generate: samples, interpolations, traversals,
reconstructions), sample_quality.py (vae-sample-quality: Frechet distance and
digit shares of samples), data_prep/convert_to_records.py (vae-convert-mnist).
Around them: cli.py (strict flags, one-line errors), settings.py (flags into
settings), cluster.py (parameter servers and workers), checkpoints.py (what a
checkpoint holds), run_dir.py (the run directory), files.py (atomic writes).
"""

# The release; CHANGELOG.md says what each brought.
__version__ = '0.6.5'


def load(path):
  """The trained model at `path` (a run directory, a checkpoint or a
  SavedModel of export.py), to call from Python: see trained_model.py.
  TensorFlow is imported on the first call, not with the package."""
  from mnist_vae import trained_model  # pylint: disable=import-outside-toplevel
  return trained_model.load(path)
