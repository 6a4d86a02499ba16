import sys

from qbench.cli.main import main

sys.exit(main())
