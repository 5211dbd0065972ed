"""``python -m avdetect.convert SUBCOMMAND ...``: dispatch to one converter's ``main``."""

from __future__ import annotations

import importlib
import sys

SUBCOMMANDS = {"talknet": "avdetect.convert.talknet"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in SUBCOMMANDS:
        print(f"usage: python -m avdetect.convert {{{','.join(SUBCOMMANDS)}}} ...\n"
              f"  talknet CKPT --out FILE.msgpack   TalkNet / CMDFD student state dict",
              file=sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    return importlib.import_module(SUBCOMMANDS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
