"""The API key never reaches a message: a key read with a CRLF ending is cleaned (or refused) before any request,
and a server's error message is redacted before it is cut short. The server is local (127.0.0.1), started and
stopped by the test."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler

import pytest

from llama_server import serve
from promptkit.backends.http_client import MESSAGE_CHARS, Client, ServerError
from promptkit.backends.openai import api_key
from promptkit.errors import ModelError

KEY = "sk-promptkit-redaction-7c21d94be0aa51f3"


def test_a_key_with_a_crlf_ending_is_cleaned_and_a_key_with_other_odd_characters_refused(monkeypatch):
    monkeypatch.setenv("PK_TEST_KEY", KEY + "\r\n")
    assert api_key("PK_TEST_KEY") == KEY
    for bad in (KEY[:10] + "\u200b" + KEY[10:], KEY[:10] + " " + KEY[10:], KEY[:10] + "\x07" + KEY[10:]):
        monkeypatch.setenv("PK_TEST_KEY", bad)
        with pytest.raises(ModelError, match=r"the API key in \$PK_TEST_KEY has a character that cannot go in an HTTP header") as err:
            api_key("PK_TEST_KEY")
        assert KEY[:8] not in str(err.value) and KEY[-8:] not in str(err.value)
    monkeypatch.setenv("PK_TEST_KEY", "   ")
    assert api_key("PK_TEST_KEY") is None


@pytest.fixture
def echoing_server():
    """Answers every request with HTTP 400 and a message that puts the key across the quoting cut."""
    pad = "x" * (MESSAGE_CHARS - len(KEY) // 2)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"error": {"message": f"{pad}{KEY} and {KEY!r}"}}).encode()
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    with serve(Handler) as url:
        yield url


def test_a_message_is_redacted_before_it_is_cut(echoing_server):
    client = Client(echoing_server, KEY, timeout=10, max_retries=0, log=lambda m: None)
    try:
        with pytest.raises(ServerError) as err:
            client.get("models")
    finally:
        client.close()
    text = str(err.value)
    assert "HTTP 400" in text and "xxxx" in text
    for piece in (KEY[:12], KEY[12:24], KEY[-12:]):  # no part of the key, whole or cut
        assert piece not in text
