"""Check the make variables that reach ssh, scp and the host, before anything runs there.

    variables.problems({NAME: VALUE, ...})     (the deploy program, deploy/ship/settings.py)

Every value is checked against its type (a host name, a user name, a number, a path), and
every problem is named at once, with the variable. A value that passed can be pasted into
a command line: it holds no character a shell or ssh reads as more than text, and none
starts with `-` (ssh would take it for an option). Standard library only.
"""
import re

NAME = r"[A-Za-z0-9_][A-Za-z0-9._-]*"
RULES = {  # variable: (pattern, what it must be)
    "APP_ENV": (r"[a-z][a-z0-9-]*", "an environment name of lowercase letters, digits and - (a config/<name>.ini)"),
    "REMOTE_HOST": (r"[A-Za-z0-9_][A-Za-z0-9._-]*|\[?[0-9A-Fa-f:.]+\]?",
                    "a host name, an address or a Host alias of ~/.ssh/config (letters, digits and ._-)"),
    "REMOTE_USER": (NAME, "a user name of letters, digits and ._-"),
    "REMOTE_DIR": (r"[A-Za-z0-9._/-]+", "a path of letters, digits and ._/-"),
    "HOST_PYTHON": (r"[A-Za-z0-9._/+-]*", "a command or path of letters, digits and ._/+-"),
    "CONFIRM": (r"1?", "1 or nothing"),
    "FORCE": (r"1?", "1 or nothing"),
}
NUMBERS = ("PORT", "KEEP_RELEASES", "LOG_MAX_KB", "LOG_KEEP", "SSH_PORT", "LINES", "MEMORY_MAX_KB", "TASKS_MAX")
AT_LEAST_1 = ("KEEP_RELEASES", "LOG_KEEP")  # 0 would keep no release (or log) at all
OPTIONAL = ("REMOTE_USER", "SSH_PORT", "HOST_PYTHON", "CONFIRM", "FORCE")


def problems(values: dict[str, str], goal: str = "deploy") -> list[str]:
    found = []
    env = values.get("APP_ENV", "prod")
    for name, value in values.items():
        if name == "GOAL" or (value == "" and name in OPTIONAL):
            continue
        if name == "REMOTE_HOST" and value == "":
            found.append(f"REMOTE_HOST is not set: give it (make {goal} REMOTE_HOST=host) or set host in [deploy] "
                         f"of config/{env}.ini")
        elif name in NUMBERS:
            if not value.isdigit():
                found.append(f"{name} must be a number, got {value!r}")
            elif name in ("PORT", "SSH_PORT") and not 1 <= int(value) <= 65535:
                found.append(f"{name} must be between 1 and 65535, got {value}")
            elif name in AT_LEAST_1 and int(value) < 1:
                found.append(f"{name} must be at least 1 (as in the INI files), got {value}")
        elif name in RULES:
            pattern, what = RULES[name]
            if value.startswith("-") or not re.fullmatch(pattern, value):
                found.append(f"{name} must be {what}, got {value!r}")
        else:
            found.append(f"{name} is not a variable this checks")
    return found
