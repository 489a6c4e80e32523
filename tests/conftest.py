"""Shared fixtures: a loopback HTTP server standing in for the authors' weights host."""
import functools
import http.server
import socket
import threading
from pathlib import Path

import pytest


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; a file named ``*.truncated.pth`` is announced at its full size
    (Content-Length) but only its first half is sent before the connection closes, as when a
    transfer is cut short."""

    def log_message(self, *args):  # keep the test output quiet
        pass

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        if not path.name.endswith('.truncated.pth') or not path.is_file():
            return super().do_GET()
        data = path.read_bytes()
        self.send_response(200)
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data[:len(data) // 2])
        self.close_connection = True


class FileServer:
    """``http.server`` on 127.0.0.1 (ephemeral port) in a thread, serving ``root``."""

    def __init__(self, root: Path):
        self.root = root
        handler = functools.partial(_Handler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
        self.url = f'http://127.0.0.1:{self.httpd.server_port}'
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        if self.thread.is_alive():
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join()


@pytest.fixture
def file_server(tmp_path):
    """A running FileServer of ``tmp_path / 'www'``; ``.stop()`` takes it down mid-test."""
    root = tmp_path / 'www'
    root.mkdir()
    server = FileServer(root)
    yield server
    server.stop()


@pytest.fixture
def refused_url():
    """An http URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    return f'http://127.0.0.1:{port}/RAVLT_T.pth'


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch hub cache: downloads land in TORCH_HOME/hub/checkpoints."""
    home = tmp_path / 'torch_home'
    monkeypatch.setenv('TORCH_HOME', str(home))
    return home / 'hub' / 'checkpoints'
