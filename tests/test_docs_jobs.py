"""Every command shown in the pages of the long jobs (reproduction, cluster
jobs, performance) runs, made small (see tests/doc_commands.py)."""

import pytest

import doc_commands


@pytest.fixture(scope='module')
def sandbox(mnist_dir, tmp_path_factory):
  return doc_commands.make_sandbox(str(tmp_path_factory.mktemp('docs_jobs')), mnist_dir)


@pytest.mark.parametrize('page', ['docs/reproduction.md', 'docs/cluster.md',
                                  'docs/performance.md'])
def test_every_command_shown_runs(page, sandbox):
  doc_commands.check_page_commands(page, sandbox)
