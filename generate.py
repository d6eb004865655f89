"""Samples, interpolations, traversals and reconstructions of a trained model:
`python generate.py --help`. The code is mnist_vae/generate.py."""

from mnist_vae import generate

if __name__ == '__main__':
  generate.run()
