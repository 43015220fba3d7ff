"""Fixtures for the Gradient Health plugin tests (helpers live in gh_logs)."""

import pytest
from gh_logs import PluginClient, make_plugin, write_plain_run, write_run


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    """`exp/train` has diagnostics data; `plain` has a loss curve only."""
    root = tmp_path_factory.mktemp("gh_logs")
    write_run(str(root / "exp"))
    write_plain_run(str(root / "plain"))
    return str(root)


@pytest.fixture(scope="module")
def client(logdir):
    return PluginClient(make_plugin(logdir))
