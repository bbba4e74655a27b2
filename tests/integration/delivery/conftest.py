"""The peers of the delivery providers, each started once per test module, and the AWS test
credentials for the moto server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from peers import Certificates, make_certificates
from peers.aws import CREDENTIALS, MotoServer


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certificates"))


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA that did not issue the peers' certificates."""
    return make_certificates(tmp_path_factory.mktemp("other"), ca_name="someone else").ca_file


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in CREDENTIALS.items():
            patch.setenv(name, value)
        with MotoServer() as server:
            yield server
