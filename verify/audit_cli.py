"""``checkpoint-audit``: prove the audit log's chain and signatures, or show its records.

``checkpoint-audit verify --data-dir DIR`` walks ``DIR/audit/audit.jsonl`` with the exported public key
(``DIR/keys/audit-signing.pub``, or ``--public-key`` for a copy kept off the station) and exits 0 when
every link, hash and checkpoint signature holds; otherwise it names the first record that was altered,
removed or reordered and exits 1. ``checkpoint-audit show`` prints records (pseudonymous refs only).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from biometrics.audit import LOG_NAME, PUBLIC_KEY_NAME, load_public_key, read_entries, verify_log


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="checkpoint-audit", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name, text in (("verify", "prove the chain and the checkpoint signatures"), ("show", "print records")):
        s = sub.add_parser(name, help=text)
        s.add_argument("--data-dir", type=Path, default=Path("data"), help="the server's data directory")
        s.add_argument("--log", type=Path, help=f"the log file (default DATA_DIR/audit/{LOG_NAME})")
        if name == "verify":
            s.add_argument("--public-key", type=Path,
                           help=f"the log's public key (default DATA_DIR/keys/{PUBLIC_KEY_NAME}); "
                                "prefer a copy kept away from the station")
        else:
            s.add_argument("--last", type=int, default=0, help="only the last N records")
            s.add_argument("--kind", help="only decisions of this kind (enrol, verify, identify, delete)")
            s.add_argument("--json", action="store_true", help="one JSON entry per line, as stored")
    return p


def _verify(args: argparse.Namespace, log_path: Path) -> int:
    key_path = args.public_key or args.data_dir / "keys" / PUBLIC_KEY_NAME
    try:
        public_key = load_public_key(key_path)
    except (OSError, ValueError) as exc:
        print(f"checkpoint-audit: cannot load the public key {key_path}: {exc}", file=sys.stderr)
        return 2
    report = verify_log(log_path, public_key)
    if not report.ok:
        print(f"TAMPERED {log_path}: {report.finding}")
        print(f"  {report.records} record(s) verified before it; last valid signed checkpoint at seq "
              f"{report.signed_through}")
        return 1
    unsigned = report.records - 1 - report.signed_through
    print(f"OK {log_path}: {report.records} records ({report.decisions} decisions, {report.checkpoints} signed "
          f"checkpoints); chain intact; signed through seq {report.signed_through}"
          + (f"; {unsigned} record(s) after the last checkpoint are chained but not yet signed" if unsigned else ""))
    return 0


def _show(args: argparse.Namespace, log_path: Path) -> int:
    rows = []
    for line, entry, error in read_entries(log_path):
        if entry is None:
            rows.append(f"line {line}: {error}")
            continue
        if args.kind and entry.get("kind") != args.kind:
            continue
        if args.json:
            rows.append(json.dumps(entry, sort_keys=True))
        elif entry.get("type") == "checkpoint":
            rows.append(f"{entry.get('seq'):>6} {entry.get('time')} CHECKPOINT ({entry.get('reason')}) "
                        f"records {entry.get('records')} key {entry.get('key_id')}")
        else:
            actor = entry.get("actor", {})
            fields = " ".join(f"{k}={json.dumps(v)}" for k, v in sorted(entry.get("fields", {}).items()))
            rows.append(f"{entry.get('seq'):>6} {entry.get('time')} {entry.get('kind'):<8} "
                        f"{actor.get('role')}:{actor.get('identity')} decision {entry.get('decision_id')} {fields}")
    for row in rows[-args.last:] if args.last else rows:
        print(row)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run one command; ``verify`` exits 1 when the log was tampered with."""
    args = build_parser().parse_args(argv)
    log_path = args.log or args.data_dir / "audit" / LOG_NAME
    if not log_path.exists():
        print(f"checkpoint-audit: no audit log at {log_path}", file=sys.stderr)
        return 2
    return _verify(args, log_path) if args.command == "verify" else _show(args, log_path)


if __name__ == "__main__":
    sys.exit(main())
