"""Provider emulators: HTTP servers speaking the OpenAI, Anthropic and Gemini wire protocols.

They stand for the outside world in demo mode, tests and benchmarks, so they import nothing from the
rest of the server. Each refuses what the real API refuses and answers deterministically.
"""
