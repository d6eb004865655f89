"""The downloader against real HTTP servers on 127.0.0.1."""

import functools
import gzip
import hashlib
import http.server
import os

import numpy as np
import pytest

from helpers import serve_http
from mnist_vae.data_prep import convert_to_records
from mnist_vae.data_prep import download
from mnist_vae.data_prep import idx

# Every test here starts processes, a cluster or a server.
pytestmark = pytest.mark.large


@pytest.fixture
def serve():
  """Starts HTTP servers over directories; returns a function giving base URLs."""
  servers = []

  def start(directory):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *args: None
    server = serve_http(handler)
    servers.append(server)
    return 'http://127.0.0.1:%d/' % server.server_address[1]

  yield start
  for server in servers:
    server.shutdown()
    server.server_close()


def _mirror(tmp_path, name, content):
  directory = tmp_path / name
  directory.mkdir()
  (directory / 'file.gz').write_bytes(content)
  return directory


GOOD = gzip.compress(idx.encode_labels(np.arange(100, dtype=np.uint8) % 10))
GOOD_SHA256 = hashlib.sha256(GOOD).hexdigest()


def test_good_file_is_accepted(serve, tmp_path):
  url = serve(_mirror(tmp_path, 'good', GOOD))
  path = download.download_file('file.gz', GOOD_SHA256, str(tmp_path / 'dl'), [url])
  assert open(path, 'rb').read() == GOOD
  assert os.listdir(tmp_path / 'dl') == ['file.gz']


def test_checksum_mismatch_is_rejected_and_next_mirror_tried(serve, tmp_path):
  bad_url = serve(_mirror(tmp_path, 'bad', GOOD[:-1] + b'\x00'))
  missing_url = serve(tmp_path)  # Serves no file.gz: 404.
  good_url = serve(_mirror(tmp_path, 'good', GOOD))
  path = download.download_file('file.gz', GOOD_SHA256, str(tmp_path / 'dl'),
                                [bad_url, missing_url, good_url])
  assert open(path, 'rb').read() == GOOD


def test_all_mirrors_failing_leaves_nothing_and_explains(serve, tmp_path):
  bad_url = serve(_mirror(tmp_path, 'bad', b'not the file'))
  closed_port_url = 'http://127.0.0.1:9/'
  with pytest.raises(download.DownloadError) as error:
    download.download_file(
        'file.gz', GOOD_SHA256, str(tmp_path / 'dl'), [bad_url, closed_port_url], timeout_sec=5)
  message = str(error.value)
  assert 'checksum mismatch' in message and closed_port_url in message
  assert '--mnist_dir' in message
  assert os.listdir(tmp_path / 'dl') == []


def test_verified_file_is_not_downloaded_again(tmp_path):
  (tmp_path / 'file.gz').write_bytes(GOOD)
  # No mirror at all: it must not need one.
  path = download.download_file('file.gz', GOOD_SHA256, str(tmp_path), [])
  assert path.endswith('file.gz')


def test_real_mnist_checksums_through_local_mirror(serve, tmp_path, mnist_dir):
  url = serve(mnist_dir)
  directory = download.download_dataset(
      'mnist', str(tmp_path / 'dl'), mirrors=['http://127.0.0.1:9/', url])
  assert sorted(os.listdir(directory)) == sorted(name + '.gz' for name in idx.STANDARD_FILES)


def test_connection_dropped_mid_file_leaves_no_partial_file(tmp_path):
  """A server that promises the whole file and hangs up halfway."""

  class HalfHandler(http.server.BaseHTTPRequestHandler):

    def do_GET(self):
      self.send_response(200)
      self.send_header('Content-Length', str(len(GOOD)))
      self.end_headers()
      self.wfile.write(GOOD[:len(GOOD) // 2])

    def log_message(self, *args):
      pass

  server = serve_http(HalfHandler)
  try:
    with pytest.raises(download.DownloadError, match='connection closed after 20 of 40 bytes'):
      download.download_file('file.gz', GOOD_SHA256, str(tmp_path / 'dl'),
                             ['http://127.0.0.1:%d/' % server.server_address[1]])
  finally:
    server.shutdown()
    server.server_close()
  assert os.listdir(tmp_path / 'dl') == []


def test_prepare_downloads_then_converts(serve, tmp_path, mnist_dir):
  url = serve(mnist_dir)
  info = convert_to_records.prepare(str(tmp_path / 'data'), download_idx=True, mirrors=[url])
  assert info['num_examples'] == {'train': 55000, 'validation': 5000, 'test': 10000}
  assert sorted(os.listdir(tmp_path / 'data' / 'raw')) == sorted(
      name + '.gz' for name in idx.STANDARD_FILES)
