import sys

from controlplane.bench import main

sys.exit(main())
