"""Run the host program: python3 remote.sh COMMAND (the bundle), or python3 deploy/host COMMAND."""
import os
import sys

# Plain syntax up to here: any Python runs it, and a too-old host is named by its version.
if sys.version_info < (3, 10):  # noqa: UP036 (the host's Python, not ours)
    sys.exit("error: the host program needs Python 3.10 or newer; this is " + sys.version.split()[0])

if os.path.isdir(sys.path[0]):  # run as a folder (deploy/host), not as the bundle's zip
    sys.path[0] = os.path.dirname(os.path.abspath(sys.path[0]))

from host.cli import main

sys.exit(main(sys.argv[1:]))
