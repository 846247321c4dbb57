"""Package metadata for {{ cookiecutter.project_name | pystr(quote=False) }}: `make build` turns it into a wheel."""
from setuptools import find_packages, setup

setup(
    name="{{ cookiecutter.project_slug }}",
    version={{ cookiecutter.version | pystr }},
    description={{ cookiecutter.description | pystr }},
    author={{ cookiecutter.author_name | pystr }},
    author_email={{ cookiecutter.author_email | pystr }},
    python_requires=">={{ cookiecutter.python_version }}",
    package_dir={"": "src"},
    packages=find_packages("src"),
{%- if cookiecutter.database == "none" %}
    package_data={"{{ cookiecutter.package_name }}": ["templates/*", "static/*"]},
{%- else %}
    # migrations/ is data, not a package: the wheel carries it for `flask db upgrade` on a host.
    package_data={"{{ cookiecutter.package_name }}": ["templates/*", "static/*", "migrations/*", "migrations/versions/*.py"]},
{%- endif %}
    include_package_data=False,
{%- if cookiecutter.database == "none" %}
    install_requires=["Flask>=3.1,<4", "gunicorn>=27,<28"],
{%- else %}
    install_requires=[
        "Flask>=3.1,<4",
        "gunicorn>=27,<28",
        "Flask-SQLAlchemy>=3.1,<4",
        "Flask-Migrate>=4.1,<5",
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
