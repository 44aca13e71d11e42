""" "View code": the chat window's request as curl, Python (``openai``) and JavaScript (``openai``
on npm), to paste into a terminal or a program.

The key is always a placeholder read from the environment (``$LOCALSERVE_API_KEY``): these
functions are never given a key, so none can leak into a snippet someone shares.
"""

from __future__ import annotations

import json
import shlex
import textwrap
from typing import Any

KEY_ENV = "LOCALSERVE_API_KEY"


def chat_request(
    model: str,
    messages: list[dict[str, str]],
    temperature: float,
    max_tokens: int,
) -> dict[str, Any]:
    """The body the chat window sends to ``/v1/chat/completions``."""
    return {
        "model": model,
        "messages": messages,
        "temperature": round(temperature, 2),
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def _literal(value: Any, indent: str, width: int = 2) -> str:
    """``value`` as JSON, continued lines indented: JavaScript reads any JSON, and Python reads
    the messages (lists and dicts of strings) as they are."""
    text = json.dumps(value, indent=width, ensure_ascii=False)
    return textwrap.indent(text, indent)[len(indent) :]


def curl_code(base_url: str, body: dict[str, Any]) -> str:
    data = json.dumps(body, indent=2, ensure_ascii=False)
    return (
        f"curl -N {base_url}/chat/completions \\\n"
        '  -H "Content-Type: application/json" \\\n'
        f'  -H "Authorization: Bearer ${KEY_ENV}" \\\n'
        f"  -d {shlex.quote(data)}\n"
    )


def python_code(base_url: str, body: dict[str, Any]) -> str:
    return (
        "import os\n\n"
        "from openai import OpenAI\n\n"
        "client = OpenAI(\n"
        f'    base_url="{base_url}",\n'
        f'    api_key=os.environ["{KEY_ENV}"],\n'
        ")\n"
        "stream = client.chat.completions.create(\n"
        f"    model={json.dumps(body['model'])},\n"
        f"    messages={_literal(body['messages'], '    ', 4)},\n"
        f"    temperature={body['temperature']},\n"
        f"    max_tokens={body['max_tokens']},\n"
        "    stream=True,\n"
        '    stream_options={"include_usage": True},\n'
        ")\n"
        "for chunk in stream:\n"
        "    if chunk.choices and chunk.choices[0].delta.content:\n"
        '        print(chunk.choices[0].delta.content, end="", flush=True)\n'
        "    if chunk.usage:\n"
        '        print(f"\\n\\n{chunk.usage.completion_tokens} tokens")\n'
    )


def javascript_code(base_url: str, body: dict[str, Any]) -> str:
    return (
        "// npm install openai   (Node 18 or later; save as chat.mjs)\n"
        'import OpenAI from "openai";\n\n'
        "const client = new OpenAI({\n"
        f'  baseURL: "{base_url}",\n'
        f"  apiKey: process.env.{KEY_ENV},\n"
        "});\n"
        "const stream = await client.chat.completions.create("
        f"{_literal(body, '')});\n"
        "for await (const chunk of stream) {\n"
        '  process.stdout.write(chunk.choices[0]?.delta?.content ?? "");\n'
        "  if (chunk.usage) console.log(`\\n\\n${chunk.usage.completion_tokens} tokens`);\n"
        "}\n"
    )


def request_snippets(base_url: str, body: dict[str, Any]) -> dict[str, str]:
    """Tab title to code, for ``base_url`` (the daemon's ``.../v1``)."""
    return {
        "curl": curl_code(base_url, body),
        "Python": python_code(base_url, body),
        "JavaScript": javascript_code(base_url, body),
    }
