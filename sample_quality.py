"""Scores a model's samples (Frechet distance, digit shares):
`python sample_quality.py --help`. The code is mnist_vae/sample_quality.py."""

from mnist_vae import sample_quality

if __name__ == '__main__':
  sample_quality.run()
