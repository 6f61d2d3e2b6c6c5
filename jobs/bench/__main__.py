import sys

from jobs.bench import main

raise SystemExit(main(sys.argv[1:]))
