"""The multiresp benchmark suite: ``python -m benchmarks`` (``--quick`` for a one-minute run).

It measures each way of sending many files in one response (the naive snippets, zipstream-ng,
Starlette's ``FileResponse``, two references, and multiresp's responses) served by uvicorn in
its own process and fetched by a client in another: time to first byte, total time,
throughput, bytes on the wire, the server's peak memory, and the time until the files are on
the client's disk. The modules:

- ``__main__``: the command line, the run loop and the output;
- ``datasets``: the generated datasets (never committed);
- ``strategies``: what is measured, and on which uvicorn stacks;
- ``server``: the Starlette app, one route per strategy;
- ``measure``: one run: a fresh server, a client process, the server's memory;
- ``probe``: the transfer client (first content byte, bytes on the wire);
- ``fetch``: ``multiresp.client.download`` timed in its own process;
- ``report``: medians, ratios to the references, targets, tables and plots.

The other scripts here (``zip_reader.py``, ``multipart_reader.py``, ``client_download.py``,
``zip_layouts.py``) are standalone micro-benchmarks, run as files.
"""
