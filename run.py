"""Run a short default campaign to completion and say where its database is.

    python run.py              # the deceptive maze (medium), novelty search, 50,000 children at most
    python run.py --help       # every option of `openended run`
    python run.py OPTIONS...   # `openended run OPTIONS...`
"""

import sys
import time

from openended.cli import app


def main() -> None:
    if len(sys.argv) > 1:  # options of `openended run` (its help for --help), not of the command group
        args = sys.argv[2:] if sys.argv[1] == "run" else sys.argv[1:]  # the usage line reads "run.py run ..."
        app(["run", *args], prog_name="python run.py")
        return
    db = f"runs/quickstart-{time.strftime('%Y%m%d-%H%M%S')}.db"
    # standalone_mode=False: typer returns the exit code instead of exiting, so the hint below
    # is printed only after a campaign that worked.
    code = app(["run", "--task", "maze-medium", "--budget", "50000", "--db", db], standalone_mode=False)
    if code:
        sys.exit(code)
    print(f"\nThe campaign database is {db}. Inspect it with:\n"
          f"  openended status {db}\n"
          f"  openended top {db} -k 5\n"
          f"  openended lineage {db} best\n"
          f"  openended plot {db} --out figures/\n"
          f"  openended serve {db}              # browse it in datasette\n"
          f"Continue it (after a stop, or on past the exit) with:\n"
          f"  openended resume {db} --budget 100000 --no-stop-at-target")


if __name__ == "__main__":
    main()
