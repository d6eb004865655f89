"""Every command shown on the cluster page runs, made small (see
tests/doc_commands.py): a local cluster and the asynchronous-training study.
A file of its own, so that it runs beside tests/test_docs.py."""

import pytest

import doc_commands


@pytest.fixture(scope='module')
def sandbox(mnist_dir, tmp_path_factory):
  return doc_commands.make_sandbox(str(tmp_path_factory.mktemp('docs_jobs')), mnist_dir)


def test_every_command_shown_on_the_cluster_page_runs(sandbox):
  doc_commands.check_page_commands('docs/cluster.md', sandbox)
