"""``--gallery ray:...`` on a head that is not this machine needs Ray's own TLS (``RAY_USE_TLS=1`` and its three
files) or an explicit ``--ray-insecure-network``: Ray has no authentication, every node holds the key ring, so a
cluster reachable in plaintext is refused at start, before the data directory is opened (no cluster needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import refused_at_start

from verify.server import check_ray_gallery

TLS = {"RAY_USE_TLS": "1", "RAY_TLS_SERVER_CERT": "/etc/ray/node.pem", "RAY_TLS_SERVER_KEY": "/etc/ray/node.key",
       "RAY_TLS_CA_CERT": "/etc/ray/ca.pem"}


@pytest.mark.parametrize("gallery", ["ray:10.0.0.5:6380", "ray://head.example:10001", "ray:[2001:db8::5]:6380"])
def test_a_remote_head_without_rays_tls_is_refused_naming_the_fixes(gallery: str) -> None:
    for environ in ({}, {"RAY_USE_TLS": "0"}):
        with pytest.raises(ValueError, match="RAY_USE_TLS=1") as refused:
            check_ray_gallery(gallery, environ=environ)
        assert "--ray-insecure-network" in str(refused.value)
    with pytest.raises(ValueError, match="RAY_TLS_CA_CERT"):
        check_ray_gallery(gallery, environ={**TLS, "RAY_TLS_CA_CERT": ""})
    check_ray_gallery(gallery, environ=TLS)
    check_ray_gallery(gallery, insecure_network=True, environ={})


@pytest.mark.parametrize("gallery", ["memory", "ray:127.0.0.1:6380", "ray://localhost:10001", "ray:[::1]:6380"])
def test_memory_and_a_loopback_head_need_nothing(gallery: str) -> None:
    check_ray_gallery(gallery, environ={})


def test_the_server_refuses_it_before_the_data_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in TLS:
        monkeypatch.delenv(name, raising=False)
    assert "RAY_USE_TLS" not in os.environ
    done = refused_at_start(tmp_path, "--workers", "0", "--gallery", "ray:10.0.0.5:6380",
                            "--store", "postgresql://postgres@127.0.0.1:5432/not-reached", "--station", "a")
    assert "Traceback" not in done.stderr
    assert "RAY_USE_TLS=1 is not set" in done.stderr and "--ray-insecure-network" in done.stderr, done.stderr
