import sys

from lcbench.cli import main

sys.exit(main())
