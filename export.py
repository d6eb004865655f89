"""Exports a trained model as a SavedModel: `python export.py --help`. The
code is mnist_vae/export.py."""

from mnist_vae import export

if __name__ == '__main__':
  export.run()
