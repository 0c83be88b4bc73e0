"""The HTTP and WebSocket layer: thin Starlette routes over the engine and the repositories."""
