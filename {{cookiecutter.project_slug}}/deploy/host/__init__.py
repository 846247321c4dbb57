"""The host program: every host-side step of every make target but the probe.

deploy/remote.sh, the sh bootstrap, sets APP_DIR, answers the probe on any Python (or
none), then runs this package with the host's own Python (3.10+, standard library only).
The Makefile sends both as one file, build/remote.sh: the bootstrap with this package
zipped after it, which Python runs as a zip application. `python3 remote.sh help` lists
the commands; COMMANDS in cli.py is their one registry.
"""
DIST = "{{ cookiecutter.project_slug }}"
PACKAGE = "{{ cookiecutter.package_name }}"
VARS = "{{ cookiecutter.package_name | upper }}"  # prefix of the app's environment variables
