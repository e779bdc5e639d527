"""`rlhf serve`: an OpenAI-compatible HTTP API on trained policies, with continuous batching.

server.py loads the models and runs uvicorn; app.py holds the API routes, protocol.py the
request parsing and OpenAI-style errors; engine.py the decode workers (continuous batching over
rlhf.rollout.continuous, or the serial baseline); chat.py the chat page that captures feedback
into the rlhf.feedback store (with --db).
"""
