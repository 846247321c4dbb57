import pytest

from {{ cookiecutter.package_name }} import create_app


@pytest.fixture()
def client():
    return create_app("test").test_client()
