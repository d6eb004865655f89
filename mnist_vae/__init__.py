"""The TF1 MLP variational autoencoder on MNIST, on tf.compat.v1.

The data flow, one module a stage:

  data_prep/         IDX files -> TFRecords (records.py: file names, schema)
  input_pipeline.py  TFRecords -> tf.data batches of float32 [batch, 784]
  model.py           the graph: encoder, decoder, losses, optimizer step
  training.py        the training graph and session that train.py runs
  evaluation.py      the negative ELBO of a whole split
  aggregate_posterior.py  q(z) against the prior: ELBO surgery, its Gaussian fit
  images.py          image grids, PNGs and image summaries

Entry points (each also a console script): train.py (vae-train),
evaluate.py (vae-evaluate), export.py (vae-export: a SavedModel),
generate.py (vae-generate: samples, interpolations, traversals,
reconstructions), sample_quality.py (vae-sample-quality: Frechet distance and
digit shares of samples), data_prep/convert_to_records.py (vae-convert-mnist). Around them: cli.py (strict flags, one-line errors),
cluster.py (parameter servers and workers), checkpoints.py (what a checkpoint
holds), files.py (atomic writes).
"""

# The release; CHANGELOG.md says what each brought.
__version__ = '0.5.1'
