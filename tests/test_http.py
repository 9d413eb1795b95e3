"""Content negotiation: ``Accept`` parsing never raises, whatever the client sends."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import multiresp
from multiresp._http import accept_quality, choose

OFFERS = ["application/zip", "multipart/mixed"]
BAD_PARAMETERS = [
    "application/zip; q*=undefined''%41",
    "application/zip; q*=idna''x",
    "application/zip; q*=punycode''abc-",
    "application/zip; q*=utf-16''%41",
    "application/zip; x*=UTF-8''%FF",
    "application/zip; q=nan",
    "application/zip; q=1e999",
    'application/zip; q="0.5',
    "application/zip; =; ;;; q",
]


@pytest.mark.parametrize("accept", BAD_PARAMETERS)
def test_a_malformed_parameter_does_not_raise(accept: str) -> None:
    assert choose(accept, OFFERS) in (*OFFERS, None)


@given(st.text(max_size=80))
def test_accept_parsing_never_raises(accept: str) -> None:
    for offer in OFFERS:
        assert 0.0 <= accept_quality(accept, offer) <= 1.0
    choose(accept, OFFERS)


@given(
    st.lists(
        st.sampled_from(["application/zip", "multipart/mixed", "*/*", "text/html", ""]), max_size=3
    ),
    st.lists(st.sampled_from(["q*=undefined''%41", "x*=idna''y", 'a="', "q=2", "q=0.5"])),
)
def test_bad_parameters_never_raise(ranges: list[str], params: list[str]) -> None:
    choose(", ".join(";".join([media, *params]) for media in ranges), OFFERS)


def negotiating_app() -> Starlette:
    entries = [multiresp.Entry.from_bytes(b"hello", "a.txt")]

    def endpoint(request: Request) -> Response:
        return multiresp.negotiate(request, entries)

    return Starlette(routes=[Route("/", endpoint)])


@pytest.mark.parametrize(
    ("accept", "status", "media_type"),
    [
        ("application/zip; q*=undefined''%41", 200, "application/zip"),
        ("multipart/mixed; q*=idna''x", 200, "multipart/mixed"),
        ("text/html; q*=undefined''%41", 406, "text/plain"),
        ("*/*; q*=utf-16''%41; q=0", 406, "text/plain"),
    ],
)
def test_negotiate_on_a_live_server_never_answers_500(
    live_server: Callable[..., Any], accept: str, status: int, media_type: str
) -> None:
    server = live_server(negotiating_app())
    response = httpx.get(server.url, headers={"Accept": accept})
    assert response.status_code == status
    assert response.headers["content-type"].startswith(media_type)
