"""Fixtures for analysis tests: small generated samples and a shared manager."""

import pytest

from hep_executor import Manager


@pytest.fixture(scope="session")
def samples(tmp_path_factory):
    from hep_executor.samples import make_samples

    out = tmp_path_factory.mktemp("samples")
    return make_samples(out, events_per_file=3000, files_per_dataset=2, extra_branches=30, seed=7)


@pytest.fixture(scope="module")
def manager():
    with Manager(local_workers=2) as m:
        m.wait_for_workers(2)
        yield m
