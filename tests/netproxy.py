"""A TCP forwarder on loopback that a test can cut and restore, to take a database away, or slow
down, to catch an upload mid-way."""
import socket
import threading
import time


class Proxy:
    """Forwards 127.0.0.1:<port> to `target`; `cut()` drops every connection and refuses new ones.

    With `rate`, each direction of each connection is held to that many bytes a second.
    """

    def __init__(self, target, rate=None):
        self.target, self.rate = target, rate
        self.port = None
        self._server = None
        self._conns = []
        self._lock = threading.Lock()

    def start(self):
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port or 0))
        server.listen()
        self.port = server.getsockname()[1]
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()
        return self

    def cut(self):
        # shutdown() wakes the thread blocked in accept(); close() alone would leave the
        # socket listening for as long as that call holds it.
        try:
            self._server.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._server.close()
        with self._lock:
            for conn in self._conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn.close()
            self._conns.clear()

    def _accept(self, server):
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src, dst):
        try:
            while data := src.recv(16384 if self.rate else 65536):
                if self.rate:
                    time.sleep(len(data) / self.rate)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
