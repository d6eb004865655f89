"""Fetches the four IDX files from public mirrors and verifies their SHA256.

Each file is streamed to `<name>.part`, hashed on the way, and renamed to its
final name only when the digest matches the published one, so an interrupted
or corrupt download never looks complete.
"""

import hashlib
import http.client
import urllib.error
import urllib.request

from absl import logging
import tensorflow as tf

from mnist_vae.data_prep import idx

# SHA256 of the published .gz archives (the MNIST ones match Yann LeCun's
# md5s; the Fashion-MNIST ones match Zalando Research's md5s).
CHECKSUMS = {
    'mnist': {
        idx.TRAIN_IMAGES: '440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609',
        idx.TRAIN_LABELS: '3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c',
        idx.TEST_IMAGES: '8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6',
        idx.TEST_LABELS: 'f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6',
    },
    'fashion_mnist': {
        idx.TRAIN_IMAGES: '3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84',
        idx.TRAIN_LABELS: 'a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845',
        idx.TEST_IMAGES: '346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073',
        idx.TEST_LABELS: '67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5',
    },
}

MIRRORS = {
    'mnist': (
        'https://storage.googleapis.com/cvdf-datasets/mnist/',
        'https://ossci-datasets.s3.amazonaws.com/mnist/',
        'http://yann.lecun.com/exdb/mnist/',
    ),
    'fashion_mnist': (
        'http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/',
        'https://storage.googleapis.com/tensorflow/tf-keras-datasets/',
    ),
}

_CHUNK_BYTES = 1 << 20


class DownloadError(RuntimeError):
  """No mirror delivered a file with the published checksum."""


def sha256_of_file(path):
  digest = hashlib.sha256()
  with tf.io.gfile.GFile(path, 'rb') as f:
    for chunk in iter(lambda: f.read(_CHUNK_BYTES), b''):
      digest.update(chunk)
  return digest.hexdigest()


def _fetch(url, destination, timeout_sec):
  """Streams `url` into `destination`; returns the SHA256 of what arrived."""
  digest = hashlib.sha256()
  received = 0
  with urllib.request.urlopen(url, timeout=timeout_sec) as response, \
      tf.io.gfile.GFile(destination, 'wb') as out:
    announced = response.headers.get('Content-Length')
    for chunk in iter(lambda: response.read(_CHUNK_BYTES), b''):
      digest.update(chunk)
      out.write(chunk)
      received += len(chunk)
  if announced is not None and received != int(announced):
    raise ValueError('connection closed after %d of %s bytes' % (received, announced))
  return digest.hexdigest()


def download_file(filename, sha256, directory, mirrors, timeout_sec=60):
  """Downloads `filename` from the first mirror that serves the right bytes.

  Args:
    filename: the archive's name on the mirrors, e.g. 'train-images-idx3-ubyte.gz'.
    sha256: its published hex digest.
    directory: where it lands (created if missing).
    mirrors: base URLs ending in '/', tried in order.
    timeout_sec: per-connection timeout.

  Returns:
    The path of the verified file.

  Raises:
    DownloadError: every mirror failed; the message lists why, per mirror.
  """
  path = directory.rstrip('/') + '/' + filename
  if tf.io.gfile.exists(path) and sha256_of_file(path) == sha256:
    logging.info('%s already present and verified.', path)
    return path
  tf.io.gfile.makedirs(directory)
  partial_path = path + '.part'
  failures = []
  for mirror in mirrors:
    url = mirror + filename
    logging.info('Downloading %s', url)
    try:
      got = _fetch(url, partial_path, timeout_sec)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
      failures.append('%s: %s' % (url, e))
      continue
    if got != sha256:
      failures.append('%s: checksum mismatch (got sha256 %s, expected %s)' % (url, got, sha256))
      continue
    tf.io.gfile.rename(partial_path, path, overwrite=True)
    return path
  if tf.io.gfile.exists(partial_path):
    tf.io.gfile.remove(partial_path)
  raise DownloadError(
      'Could not download %s from any mirror:\n  %s\nOffline? Copy the four '
      'files (%s, gzip or not) into a directory and pass it as --mnist_dir.' %
      (filename, '\n  '.join(failures), ', '.join(n + '.gz' for n in idx.STANDARD_FILES)))


def download_dataset(dataset, directory, mirrors=None, timeout_sec=60):
  """Downloads and verifies the four IDX archives of `dataset` into `directory`.

  Args:
    dataset: 'mnist' or 'fashion_mnist'.
    directory: destination directory.
    mirrors: base URLs to try instead of the built-in list (tests use this).
    timeout_sec: per-connection timeout.
  """
  checksums = CHECKSUMS[dataset]
  for name in idx.STANDARD_FILES:
    download_file(name + '.gz', checksums[name], directory, mirrors or MIRRORS[dataset],
                  timeout_sec)
  return directory
