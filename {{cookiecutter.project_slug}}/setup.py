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
    package_data={"{{ cookiecutter.package_name }}": ["templates/*", "static/*"]},
    include_package_data=False,
    install_requires=["Flask>=3.1,<4", "gunicorn>=27,<28"],
    entry_points={
        "console_scripts": ["{{ cookiecutter.package_name }} = {{ cookiecutter.package_name }}.cli:main"],
    },
)
