"""``@audited`` callables pickle and copy as the functions they wrap: wrapt's proxy (used for
generator functions, classmethods and staticmethods) refused both, so ``ProcessPoolExecutor``
could not take a decorated staticmethod the undecorated one could."""

from __future__ import annotations

import copy
import inspect
import pickle

import pytest

import inferaudit_sdk as ia


class Server:
    @ia.audited(model="m")
    @staticmethod
    def handle(x):
        return x + 1

    @ia.audited(model="m")
    @classmethod
    def create(cls, x):
        return (cls.__name__, x)

    @ia.audited(model="m")
    def stream(self, n):
        yield from range(n)

    def __eq__(self, other):
        return type(other) is Server


@ia.audited(model="m")
def generate(n):
    yield from range(n)


@pytest.mark.parametrize("get", [lambda: Server.handle, lambda: Server.create,
                                 lambda: Server().stream, lambda: generate],
                         ids=["staticmethod", "classmethod", "generator-method", "generator"])
def test_pickled_and_copied_as_the_function_it_wraps(otel, get):
    f = get()
    for twin in (pickle.loads(pickle.dumps(f)), copy.deepcopy(f), copy.copy(f)):
        assert twin.__name__ == f.__name__
        assert inspect.isgeneratorfunction(twin) == inspect.isgeneratorfunction(f)
    assert pickle.loads(pickle.dumps(Server.handle))(2) == 3
    assert pickle.loads(pickle.dumps(Server.create))(2) == ("Server", 2)
    assert list(pickle.loads(pickle.dumps(generate))(3)) == [0, 1, 2]
    assert list(pickle.loads(pickle.dumps(Server().stream))(2)) == [0, 1]
