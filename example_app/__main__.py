"""``python -m example_app [--host H] [--port N]``: serve the example gateway."""

from __future__ import annotations

import argparse
import logging
import os
import secrets

from . import create_app

EXAMPLE_CHAT = (
    '{"model": "llama3.2", "messages": [{"role": "user", "content": "Why is the sky blue?"}], "stream": false}'
)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m example_app", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = create_app(_admin_config())
    base = f"http://{arguments.host}:{arguments.port}"
    if app.config["EXAMPLE_UPSTREAM"] == "simulator":
        upstream = (
            "the built-in simulated upstream (no Ollama or vLLM needed).\n"
            "  For a real one: EXAMPLE_UPSTREAM=proxy UPSTREAM_OLLAMA_URL=http://127.0.0.1:11434"
            " UPSTREAM_OPENAI_URL=http://127.0.0.1:8000/v1 python -m example_app"
        )
    else:
        upstream = (
            f"Ollama at {app.config['UPSTREAM_OLLAMA_URL']}, OpenAI-compatible at {app.config['UPSTREAM_OPENAI_URL']}"
        )
    print(
        f"flask-earnings example gateway on {base}\n"
        f"  upstream: {upstream}\n"
        f"  try: curl -s {base}/api/chat -d '{EXAMPLE_CHAT}'\n"
        f"  tasks are stored in {app.extensions['earnings'].store.engine.url.render_as_string(hide_password=True)}\n"
        f"  dashboard: {base}/earnings/ (token: {app.config['EARNINGS_ADMIN_TOKEN']})\n"
        "  report: flask --app example_app earnings report --group-by framework,task_type",
        flush=True,
    )
    app.run(host=arguments.host, port=arguments.port, threaded=True)


def _admin_config() -> dict[str, str]:
    """A session key, and an admin token unless the environment gives one, made up for this
    run: the dashboard of a local demo then opens (the admin is closed without a token)."""
    config = {"SECRET_KEY": secrets.token_hex(32)}
    if "EARNINGS_ADMIN_TOKEN" not in os.environ:
        config["EARNINGS_ADMIN_TOKEN"] = secrets.token_urlsafe(18)
    return config


if __name__ == "__main__":
    main()
