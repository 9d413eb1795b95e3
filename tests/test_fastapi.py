"""The responses in a real FastAPI app on uvicorn: HEAD, OpenAPI, background tasks."""

from __future__ import annotations

import threading
from collections.abc import Callable

import httpx
from fastapi import BackgroundTasks, FastAPI, Request

from multiresp import Entry
from multiresp.responses import (
    NEGOTIATED_RESPONSES,
    MultipartResponse,
    ZipStreamResponse,
    negotiate,
)

from conftest import LiveServer

Serve = Callable[..., LiveServer]
ENTRIES = [Entry.from_bytes(b"x" * 1000, "x.txt"), Entry.from_bytes(b"y" * 10, "y.txt")]


def make_app(done: list[str], ran: threading.Event) -> FastAPI:
    app = FastAPI()

    # HEAD beside GET: `api_route(methods=["GET", "HEAD"])` works too, but documents the
    # operation twice under one operationId (a warning from FastAPI's /openapi.json).
    @app.get("/files.zip", response_class=ZipStreamResponse)
    @app.head("/files.zip", include_in_schema=False)
    def files(tasks: BackgroundTasks) -> ZipStreamResponse:
        tasks.add_task(done.append, "zip")
        tasks.add_task(ran.set)
        return ZipStreamResponse(ENTRIES)

    @app.get("/parts", response_class=MultipartResponse)
    def parts() -> MultipartResponse:
        return MultipartResponse(ENTRIES)

    @app.get("/either", responses=NEGOTIATED_RESPONSES)
    def either(request: Request, tasks: BackgroundTasks) -> object:
        tasks.add_task(done.append, "either")
        tasks.add_task(ran.set)
        return negotiate(request, ENTRIES)

    return app


def test_head_get_and_background_tasks_in_fastapi(live_server: Serve) -> None:
    done: list[str] = []
    ran = threading.Event()
    server = live_server(make_app(done, ran))
    head = httpx.head(server.url + "/files.zip")
    assert head.status_code == 200
    assert ran.wait(5)
    ran.clear()
    get = httpx.get(server.url + "/files.zip")
    assert int(head.headers["content-length"]) == len(get.content)
    assert ran.wait(5)
    ran.clear()
    assert done == ["zip", "zip"]  # the endpoint's BackgroundTasks ran, for HEAD and GET
    response = httpx.get(server.url + "/either", headers={"accept": "multipart/mixed"})
    assert response.headers["content-type"].startswith("multipart/mixed; boundary=")
    assert ran.wait(5)
    assert done[-1] == "either"


def test_openapi_documents_the_media_types(live_server: Serve) -> None:
    server = live_server(make_app([], threading.Event()))
    paths = httpx.get(server.url + "/openapi.json").json()["paths"]
    assert list(paths["/files.zip"]["get"]["responses"]["200"]["content"]) == ["application/zip"]
    assert list(paths["/parts"]["get"]["responses"]["200"]["content"]) == ["multipart/mixed"]
    either = paths["/either"]["get"]["responses"]
    assert {"application/zip", "multipart/mixed"} <= set(either["200"]["content"])
    assert "406" in either
