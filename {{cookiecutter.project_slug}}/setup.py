"""Package metadata for {{ cookiecutter.project_name }}: `make build` turns it into a wheel."""
from setuptools import find_packages, setup

setup(
    name="{{ cookiecutter.project_slug }}",
    version="{{ cookiecutter.version }}",
    description="{{ cookiecutter.description | replace('"', '\\"') }}",
    author="{{ cookiecutter.author_name | replace('"', '\\"') }}",
    author_email="{{ cookiecutter.author_email }}",
    python_requires=">={{ cookiecutter.python_version }}",
    package_dir={"": "src"},
    packages=find_packages("src"),
    package_data={"{{ cookiecutter.package_name }}": ["templates/*", "static/*"]},
    include_package_data=False,
    install_requires=["Flask>=3.1,<4", "gunicorn>=27,<28"],
    entry_points={
        "console_scripts": ["{{ cookiecutter.package_name }} = {{ cookiecutter.package_name }}.cli:main"],
    },
)
