import sys

from embedforge.cli import main

sys.exit(main())
