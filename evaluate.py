"""Evaluates checkpoints: `python evaluate.py --help`. The code is
mnist_vae/evaluate.py."""

from mnist_vae import evaluate

if __name__ == '__main__':
  evaluate.run()
