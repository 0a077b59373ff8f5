"""Shared pytest fixtures."""

import zlib

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_torch(request):
    """Seed torch's global RNG per test from the test's id: fresh for every test, reproducible."""
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))
