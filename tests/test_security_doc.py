"""docs/security.md's table of who may call what is verify.roles' tables, row for row (it lacked RateDecision,
ListReviews and ResolveReview), and crypto's account of where the key file lives is keydir's."""

from __future__ import annotations

import re
from pathlib import Path

import biometrics.crypto
from biometrics.keydir import KEYRING_NAME
from verify.roles import ALL_ROLES, OTHER_METHODS, ROLES

DOC = Path(__file__).resolve().parent.parent / "docs" / "security.md"


def documented_roles() -> dict[str, frozenset[str]]:
    """The rows of the table headed ``| method | kiosk | officer | auditor |``, by method (full gRPC names for
    the other services' methods, written ``\\`service\\` Method``)."""
    lines = DOC.read_text(encoding="utf-8").splitlines()
    start = lines.index("| method | kiosk | officer | auditor |") + 2
    table: dict[str, frozenset[str]] = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        roles = frozenset(role for role, cell in zip(ALL_ROLES, cells[1:], strict=True) if cell == "yes")
        other = re.fullmatch(r"`([\w.]+)` (\w+)", cells[0])
        for method in ([f"/{other[1]}/{other[2]}"] if other else cells[0].split(", ")):
            assert method not in table, f"{method} twice in the table"
            table[method] = roles
    return table


def test_the_documented_role_table_is_the_servers() -> None:
    table = documented_roles()
    assert {m: r for m, r in table.items() if not m.startswith("/")} == ROLES
    assert {m: r for m, r in table.items() if m.startswith("/")} == OTHER_METHODS


def test_crypto_names_the_key_directory_not_the_data_directory_for_the_key_file() -> None:
    doc = biometrics.crypto.__doc__ or ""
    assert f"KEY_DIR/{KEYRING_NAME}" in doc and f"DATA_DIR/keys/{KEYRING_NAME}" not in doc
