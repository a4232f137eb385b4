"""Mint and revoke API tokens: `python -m zbifrost.tokens add alice --role admin --file tokens.yaml`.

`add` prints the new token once and appends only its SHA-256 to the file; `revoke` marks a
user's tokens revoked (exit status 1 when the user has none left to revoke); `list` shows users
and roles, marking revoked and expired tokens (never the tokens). A running server picks
changes up on the next connection. The file is written with mode 0600.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import yaml

from .auth import Identity, TokenFileError, hash_token, identity_problem, read_token_file

# the tokens file as YAML holds it: {"tokens": [{"user", "role", "sha256", ...}, ...]}
TokensData = dict[str, Any]


def _load(path: str) -> tuple[TokensData, dict[str, Identity]]:
    """The file's data and its {sha256: Identity} table (a malformed file is refused)."""
    if not os.path.exists(path):
        return {"tokens": []}, {}
    identities = read_token_file(path)
    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle) or {}
    data.setdefault("tokens", [])
    return data, identities


def _save(path: str, data: TokensData) -> None:
    temporary = f"{path}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        yaml.safe_dump(data, handle, sort_keys=False)
    os.replace(temporary, path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zbifrost.tokens", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="mint a token for a user (printed once)")
    add.add_argument("user")
    add.add_argument("--role", default="user")
    add.add_argument("--expires", help="ISO date/time after which the token stops working")
    revoke = commands.add_parser("revoke", help="revoke every token of a user")
    revoke.add_argument("user")
    listing = commands.add_parser("list", help="list users and roles")
    for sub in (add, revoke, listing):
        sub.add_argument("--file", required=True, help="the tokens YAML file")
    args = parser.parse_args(argv)
    try:
        data, identities = _load(args.file)
    except TokenFileError as err:
        parser.exit(2, f"{err}\n")
    if args.command == "add":
        problem = identity_problem(args.user, args.role)
        if problem is not None:  # the server would refuse to load the file
            parser.exit(2, f"{problem}\n")
        token = secrets.token_urlsafe(32)
        entry = {"user": args.user, "role": args.role, "sha256": hash_token(token)}
        if args.expires:
            try:
                datetime.fromisoformat(args.expires)
            except ValueError:
                parser.exit(2, f"--expires: {args.expires!r} is not an ISO date/time\n")
            entry["expires"] = args.expires
        data["tokens"].append(entry)
        _save(args.file, data)
        print(token)
    elif args.command == "revoke":
        count = 0
        for entry in data["tokens"]:
            if entry.get("user") == args.user and not entry.get("revoked"):
                entry["revoked"] = True
                count += 1
        if not count:
            parser.exit(1, f"{args.user}: no token to revoke in {args.file}\n")
        _save(args.file, data)
        print(f"revoked {count} token(s) of {args.user}", file=sys.stderr)
    else:
        now = time.time()
        for entry in data["tokens"]:
            identity = identities[str(entry["sha256"]).lower()]
            state = " (revoked)" if identity.revoked else "" if identity.usable(now) else " (expired)"
            print(f"{entry.get('user')}\t{entry.get('role')}{state}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
