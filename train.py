"""Trains the VAE: `python train.py --help`. The code is mnist_vae/train.py."""

from mnist_vae import train

if __name__ == '__main__':
  train.run()
