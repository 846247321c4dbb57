"""The one test toolkit: private sshd hosts, namespace hosts, booted systemd servers, load,
and the handle on a deployed app. Imported by the tests, `make demo` and bench/."""
