import sys

from cnnlab.cli.main import main

sys.exit(main())
