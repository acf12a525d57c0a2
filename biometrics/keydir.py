"""Where a checkpoint's keys live: a key directory that is never inside the data directory.

A copy of the data directory (a stolen disk, a backup tape) must not open the sealed rows nor let anyone
enumerate pseudonyms, so the key ring and the audit signing key live apart from the data:

- ``--key-dir DIR`` (or ``CHECKPOINT_KEY_DIR``) names the directory; by default it is
  ``$XDG_CONFIG_HOME/checkpoint/keys`` (``~/.config/checkpoint/keys``), created 0700 on a first start.
- A key directory (or key file) inside the data directory (or an island's replica directory) is refused, unless
  the operator says explicitly that this is a development setup (``--dev-keys-in-data-dir``): then a
  data-directory copy opens everything, and the server says so in its log at every start.
- So is an audit anchor (``--audit-anchor``, the exported signed head) inside them: whoever can cut the chain in
  the data directory could replace the head beside it, and the head would prove nothing
  (:func:`check_outside`).

What each choice protects against is set out in docs/security.md ("Where the keys live").
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from biometrics.datadir import describe

log = logging.getLogger(__name__)

ENV_KEY_DIR = "CHECKPOINT_KEY_DIR"
KEYRING_NAME = "keyring.json"


class KeyLocationError(Exception):
    """The keys would sit inside the data directory (or the key directory cannot be used)."""


def default_key_dir() -> Path:
    """``$CHECKPOINT_KEY_DIR``, else ``$XDG_CONFIG_HOME/checkpoint/keys``, else ``~/.config/checkpoint/keys``;
    :class:`KeyLocationError` when there is none (neither variable set, and no home directory for this user: a
    container run under a UID with no passwd entry and no ``$HOME``)."""
    if os.environ.get(ENV_KEY_DIR):
        return Path(os.environ[ENV_KEY_DIR])
    config = os.environ.get("XDG_CONFIG_HOME")
    if not config:
        try:
            config = str(Path.home() / ".config")
        except (RuntimeError, KeyError):  # no $HOME, and the password database knows no such user
            raise KeyLocationError(f"there is no default key directory: ${ENV_KEY_DIR} and $XDG_CONFIG_HOME are not "
                                   "set and this user has no home directory; give --key-dir") from None
    return Path(config) / "checkpoint" / "keys"


def default_key_dir_text() -> str:
    """:func:`default_key_dir` as a help text or a message names it; never raises (the help of a command whose user
    has no home directory is still shown, and --key-dir still read)."""
    try:
        return str(default_key_dir())
    except KeyLocationError:
        return f"none for this user: no ${ENV_KEY_DIR}, $XDG_CONFIG_HOME or home directory"


def is_inside(path: Path, directory: Path) -> bool:
    """True when ``path`` is ``directory`` or lies under it (symbolic links resolved)."""
    p, d = path.expanduser().resolve(), directory.expanduser().resolve()
    return p == d or d in p.parents


def check_key_location(key_path: Path, data_dir: Path, *, allow_inside: bool = False) -> None:
    """Refuse keys (a key directory or a key file) inside ``data_dir``, unless ``allow_inside`` (development).

    Raises :class:`KeyLocationError` with a message that says how to fix it.
    """
    if allow_inside or not is_inside(key_path, data_dir):
        return
    raise KeyLocationError(
        f"the keys at {key_path} are inside the data directory {data_dir}: a copy of the data directory would "
        "open every sealed row. Move them out (for example `mv "
        f"{key_path} {default_key_dir_text()}`) and pass --key-dir, or, for a development machine only, pass "
        "--dev-keys-in-data-dir.")


def check_outside(folders: list[Path], *, keys: list[Path], anchor: Path | None, allow_inside: bool = False) -> None:
    """Refuse any of ``keys`` (key directory, key file) or the audit ``anchor`` inside any of ``folders`` (the data
    directory, a replica directory), unless ``allow_inside`` (development): :class:`KeyLocationError`, with a
    message that says how to fix it."""
    for folder in folders:
        for key_path in keys:
            check_key_location(key_path, folder, allow_inside=allow_inside)
        if anchor is not None and not allow_inside and is_inside(anchor, folder):
            raise KeyLocationError(
                f"the audit anchor {anchor} is inside the data directory {folder}: whoever can cut the audit chain "
                "there could replace the signed head beside it. Put --audit-anchor outside it (best on another "
                "mount), or leave it out (the head goes to the key directory); for a development machine only, pass "
                "--dev-keys-in-data-dir.")


PUBLIC_SUFFIXES = (".pub", ".crt")  # public material beside the keys: left readable


def make_key_private(path: Path, mode: int = 0o600) -> None:
    """Tighten the key file (or key directory, ``mode`` 0700) ``path`` to ``mode`` when group or others can reach
    it, with a warning, as :func:`biometrics.datadir.make_private` does for the data directory; raise
    :class:`KeyLocationError` when this process may not (another user owns it): a key that other users can read is
    not used."""
    old = path.stat().st_mode & 0o777
    if not old & 0o077:
        return
    try:
        os.chmod(path, mode)
    except PermissionError:
        raise KeyLocationError(
            f"the key {'directory' if path.is_dir() else 'file'} {describe(path)} is open to other users and this "
            f"server (uid {os.geteuid()}) cannot make it private: as its owner, `chmod {mode:o} {path}`") from None
    log.warning("%s was open to other users (mode %o): now %o", path, old, mode)


def prepare_key_dir(key_dir: Path) -> Path:
    """Create ``key_dir`` (mode 0700) if needed, or tighten it to 0700, and each key file in it (every regular
    file but public material, ``*.pub`` and ``*.crt``) to 0600 (:func:`make_key_private`); returns it. A symbolic
    link is left alone: its target lives elsewhere and may be shared (a certificate); the key ring is checked
    through its link when it is read (:meth:`biometrics.crypto.KeyRing.load`)."""
    key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    make_key_private(key_dir, 0o700)
    for path in sorted(key_dir.iterdir()):
        if path.is_file() and not path.is_symlink() and path.suffix not in PUBLIC_SUFFIXES:
            make_key_private(path)
    return key_dir
