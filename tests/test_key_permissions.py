"""The key directory and the key files are their owner's alone, as the data directory is: an open key directory
is tightened to 0700 and a key file other users can read to 0600, with a warning; one this process may not
tighten is refused."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from biometrics.audit import SIGNING_KEY_NAME
from biometrics.crypto import KeyRing
from biometrics.keydir import KEYRING_NAME, KeyLocationError, prepare_key_dir
from biometrics.service import CheckpointService, StoreLocation
from verify import keys as keys_cli


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def open_keys(tmp_path: Path) -> Path:
    """A key directory at 0755 with a key ring at 0644, as a careless copy (umask 022) leaves them."""
    key_dir = tmp_path / "keys"
    key_dir.mkdir()
    key_dir.chmod(0o755)
    KeyRing.generate().save(key_dir / KEYRING_NAME)
    (key_dir / KEYRING_NAME).chmod(0o644)
    return key_dir


def test_a_station_tightens_its_open_key_directory_and_key_files(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    key_dir = open_keys(tmp_path)
    service = CheckpointService.open(StoreLocation(tmp_path / "data", key_dir=key_dir))
    service.close()
    (key_dir / SIGNING_KEY_NAME).chmod(0o640)
    service = CheckpointService.open(StoreLocation(tmp_path / "data", key_dir=key_dir))
    service.close()
    assert mode(key_dir) == 0o700
    assert mode(key_dir / KEYRING_NAME) == 0o600
    assert mode(key_dir / SIGNING_KEY_NAME) == 0o600
    assert f"{key_dir} was open to other users (mode 755): now 700" in caplog.text
    assert f"{key_dir / KEYRING_NAME} was open to other users (mode 644): now 600" in caplog.text
    assert f"{key_dir / SIGNING_KEY_NAME} was open to other users (mode 640): now 600" in caplog.text


def test_a_key_ring_file_read_by_itself_is_tightened(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    key_file = tmp_path / "elsewhere.json"
    KeyRing.generate().save(key_file)
    key_file.chmod(0o604)
    KeyRing.load(key_file)
    assert mode(key_file) == 0o600
    assert "was open to other users (mode 604): now 600" in caplog.text


def test_a_private_key_directory_is_left_as_it_is(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    key_dir = prepare_key_dir(tmp_path / "keys")
    KeyRing.generate().save(key_dir / KEYRING_NAME)
    (key_dir / "audit-signing.pub").write_bytes(b"public")
    (key_dir / "audit-signing.pub").chmod(0o644)
    prepare_key_dir(key_dir)
    assert mode(key_dir) == 0o700 and mode(key_dir / KEYRING_NAME) == 0o600
    assert mode(key_dir / "audit-signing.pub") == 0o644  # an exported public key is meant to be shared
    assert "open to other users" not in caplog.text


def test_open_keys_this_process_may_not_tighten_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    key_dir = open_keys(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "checkpoint.db").touch()

    def chmod(path: object, mode: int) -> None:
        raise PermissionError(1, "Operation not permitted", str(path))

    monkeypatch.setattr(os, "chmod", chmod)
    with pytest.raises(KeyLocationError, match=r"cannot make it private: as its owner, `chmod 700 "):
        prepare_key_dir(key_dir)
    with pytest.raises(KeyLocationError, match=r"key file .*keyring.json \(owner uid \d+, mode 644\).*`chmod 600 "):
        KeyRing.load(key_dir / KEYRING_NAME)
    with pytest.raises(SystemExit, match=r"checkpoint-keys: the key file .*chmod 600"):
        keys_cli.main(["status", "--data-dir", str(tmp_path / "data"), "--key-dir", str(key_dir)])


def test_links_and_public_material_in_the_key_directory_are_left_as_they_are(tmp_path: Path) -> None:
    """A certificate shared with other services, linked into the key directory or copied there as ``*.crt``, is
    not made private (it was: its target's mode changed, or the start refused a target another user owns)."""
    shared = tmp_path / "shared-ca.pem"
    shared.write_text("-----BEGIN CERTIFICATE-----\n")
    shared.chmod(0o644)
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    (keys / "ca.pem").symlink_to(shared)
    (keys / "station.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    (keys / "station.crt").chmod(0o644)
    (keys / "stray.key").write_text("secret")
    (keys / "stray.key").chmod(0o644)
    prepare_key_dir(keys)
    assert mode(shared) == 0o644 and mode(keys / "station.crt") == 0o644
    assert mode(keys / "stray.key") == 0o600  # any other file is still tightened


@pytest.fixture
def no_home(monkeypatch: pytest.MonkeyPatch) -> None:
    """A user with no home directory: no $HOME and no passwd entry (a container under an arbitrary UID), and
    neither key variable set."""
    import pwd

    for name in ("HOME", "XDG_CONFIG_HOME", "CHECKPOINT_KEY_DIR"):
        monkeypatch.delenv(name, raising=False)

    def no_entry(uid: int) -> pwd.struct_passwd:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.setattr(pwd, "getpwuid", no_entry)


def test_a_user_with_no_home_directory_still_gets_the_help_and_gives_key_dir(no_home, tmp_path: Path,
                                                                             capsys) -> None:
    """Review: the parsers' help text asked for the default key directory, and Path.home() raised RuntimeError
    (a traceback) before --key-dir was even read. Now the help says there is none, --key-dir is read, and a command
    that needs the default says to give --key-dir."""
    from biometrics.keydir import default_key_dir
    from verify import server

    args = server.build_parser().parse_args(["--key-dir", str(tmp_path / "keys")])
    assert args.key_dir == tmp_path / "keys"
    with pytest.raises(SystemExit):
        server.build_parser().parse_args(["--help"])
    assert "none for this user" in " ".join(capsys.readouterr().out.split())
    with pytest.raises(KeyLocationError, match="give --key-dir"):
        default_key_dir()
    with pytest.raises(SystemExit, match="checkpoint-keys: there is no default key directory"):
        keys_cli.main(["status", "--data-dir", str(tmp_path / "data")])


def test_checkpoint_audit_with_no_home_directory_gets_its_help_and_says_to_give_key_dir(no_home, tmp_path: Path,
                                                                                          capsys) -> None:
    """The same for checkpoint-audit: its help text called the default key directory (a traceback), and verify
    without --key-dir raised from outside its error handling. Now the help says there is none and the command
    says to give --key-dir, exit status 2."""
    from verify import audit_cli

    with pytest.raises(SystemExit):
        audit_cli.build_parser().parse_args(["verify", "--help"])
    assert "none for this user" in " ".join(capsys.readouterr().out.split())
    export = tmp_path / "export.jsonl"
    export.write_text("")
    assert audit_cli.main(["verify", "--log", str(export)]) == 2  # the public key is looked for in KEY_DIR
    assert "give --key-dir" in " ".join(capsys.readouterr().err.split())
    # an export needs no key directory otherwise: shown as it is; verified with --public-key (here a missing
    # one, which is what it then says), not refused for want of a key directory
    assert audit_cli.main(["show", "--log", str(export)]) == 0
    assert audit_cli.main(["verify", "--log", str(export), "--public-key", str(tmp_path / "audit.pub")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "cannot load the public key" in err and "give --key-dir" not in err
