"""Starts a plain Python subprocess (argv[1]: a file for its pid) and waits for it."""

import subprocess
import sys

child = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(30)"
subprocess.run([sys.executable, "-c", child, sys.argv[1]], timeout=60)
