import sys

from kimidoc.cli import main

sys.exit(main())
