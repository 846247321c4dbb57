"""Package metadata for {{ cookiecutter.project_name | pystr(quote=False) }}: `make build` turns it into a wheel."""
import subprocess
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "{{ cookiecutter.package_name }}"


def package_files() -> list[str]:
    """Every file under src/<package>/ that git does not ignore (every file, outside git),
    less __pycache__/ and *.pyc: templates and static files in any subfolder,
    SQL, JSON, fonts. `make pack` checks that the wheel holds each one."""
    root = Path(__file__).resolve().parent / "src" / PACKAGE
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", "."],
                                cwd=root, capture_output=True, check=True).stdout.decode().split("\0")
        paths = [root / name for name in listed if name]
    except (OSError, subprocess.CalledProcessError):  # no git, or not a repository
        paths = list(root.rglob("*"))
    return sorted(str(path.relative_to(root)) for path in paths
                  if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc")


setup(
    name="{{ cookiecutter.project_slug }}",
    version={{ cookiecutter.version | pystr }},
    description={{ cookiecutter.description | pystr }},
    author={{ cookiecutter.author_name | pystr }},
    author_email={{ cookiecutter.author_email | pystr }},
    python_requires=">={{ cookiecutter.python_version }}",
    package_dir={"": "src"},
    packages=find_packages("src"),
    package_data={PACKAGE: package_files()},
    include_package_data=False,
{%- if cookiecutter.database == "none" %}
    install_requires=["Flask>=3.1,<4", "gunicorn>=27,<28"],
{%- else %}
    install_requires=[
        "Flask>=3.1,<4",
        "gunicorn>=27,<28",
        "Flask-SQLAlchemy>=3.1,<4",
        "Flask-Migrate>=4.1,<5",
        "Flask-WTF>=1.3,<2",
        "WTForms>=3.2,<4",
        "SQLAlchemy>=2.0,<2.1",
{%- if cookiecutter.database == "postgresql" %}
        "psycopg[binary]>=3.2,<4",
{%- endif %}
    ],
{%- endif %}
    entry_points={
        "console_scripts": ["{{ cookiecutter.package_name }} = {{ cookiecutter.package_name }}.cli:main"],
    },
)
