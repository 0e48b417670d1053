"""`privinfer serve`: a local OpenAI-compatible proxy that does the client's part of a mode.

Security assumption: the proxy runs on the user's own machine (127.0.0.1 by default) and is as
trusted as the user's client: it sees prompts and answers in the clear, then hands them to the
chosen mode's plug-in (`privinfer.modes`), which attests the enclave (tee), secret-shares the
input (mpc) or holds the CKKS key (he). Nothing here logs, counts or echoes prompt or output
text; error bodies name fields, never their contents.

Modules: `schemas` (pydantic requests and responses, strict OpenAI shape), `errors` (the
OpenAI error body), `checks` (a whole request, before any mode runs), `backend` (models, the
mode plug-in, services started once, the worker thread), `run` (mode calls on that thread, seen
from the event loop), `stream` (one generation as events: text deltas, stop strings, logprobs,
per-token figures), `respond` (whole responses and SSE streams), `app` (the routes), `metrics`
(Prometheus), `page/` (the chat page at `/`).
"""
