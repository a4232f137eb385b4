"""`python -m zbifrost ARGS` runs `twistd --nodaemon --pidfile= zbifrost ARGS` (like `python -m daphne`)."""

import sys

from twisted.scripts.twistd import run


def main() -> None:
    sys.argv = ["twistd", "--nodaemon", "--pidfile=", "zbifrost", *sys.argv[1:]]
    run()


if __name__ == "__main__":
    main()
