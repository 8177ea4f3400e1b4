import pytest

# Small windows and chunks so that the window slides and several lanes run
# within a second or two on a 2-core CPU, with the real model.
SMALL = dict(context=48, slide=16, chunk_bytes=200, lanes=3)


@pytest.fixture(scope="session")
def small():
    return dict(SMALL)


@pytest.fixture(scope="session")
def model_path():
    from nacrith.modelfile import default_model_path

    return default_model_path()
