"""`python -m patron` and the `patron` console script."""

import sys


def main() -> None:
    from patron.cli.app import main as run

    sys.exit(run())


if __name__ == "__main__":
    main()
