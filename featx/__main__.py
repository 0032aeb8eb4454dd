import sys

from featx.console import main

sys.exit(main())
